from . import runtime  # noqa: F401


class Device:
    def __init__(self, i=0):
        self.id = 0 if i is None else int(i)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False

    def synchronize(self):
        pass


class _Stream:
    def synchronize(self):
        pass


def get_current_stream():
    return _Stream()
