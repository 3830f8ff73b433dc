from fastnn import _C
