"Argument checks shared by every layer: one wording for 'what argument, what value, what is allowed'."
import numbers

__all__ = []   # internal helpers: not part of the star import


def check_int(name:str, value, minimum:int=None, maximum:int=None, also:str='') -> int:
    "`value` if an int (not a bool) in `[minimum, maximum]`, else a `ValueError` naming `name`, the range and `also`."
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    ok = ok and (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
    if not ok: raise ValueError(f"`{name}` must be an integer{_range(minimum, maximum)}{f' ({also})' if also else ''}, "
                                f"got {value!r}")
    return int(value)


def check_float(name:str, value, minimum:float=None, maximum:float=None, open_min:bool=False,
                open_max:bool=False) -> float:
    "`value` as a float if real (not a bool) and in range (`open_min`/`open_max` exclude an end), else a `ValueError`."
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    ok = ok and (minimum is None or (value > minimum if open_min else value >= minimum))
    ok = ok and (maximum is None or (value < maximum if open_max else value <= maximum))
    if not ok: raise ValueError(f"`{name}` must be a number{_range(minimum, maximum, open_min, open_max)}, "
                                f"got {value!r}")
    return float(value)


def check_choice(name:str, value, allowed):
    "`value` if it is one of `allowed`, else a `ValueError` listing them."
    if value not in allowed: raise ValueError(f"`{name}` must be one of {list(allowed)}, got {value!r}")
    return value


def _range(minimum, maximum, open_min=False, open_max=False):
    if minimum is not None and maximum is not None:
        return f" in {'(' if open_min else '['}{minimum}, {maximum}{')' if open_max else ']'}"
    if minimum is not None: return f" {'>' if open_min else '>='} {minimum}"
    if maximum is not None: return f" {'<' if open_max else '<='} {maximum}"
    return ''
