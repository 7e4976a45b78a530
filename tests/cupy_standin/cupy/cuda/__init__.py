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


class MemoryHook:
    """cupy.cuda.MemoryHook's protocol (a context manager; subclasses override the
    ``*_preprocess``/``*_postprocess`` callbacks). The stand-in allocates no device memory, so
    no callback is ever made; a hook only has to install and uninstall."""

    name = "MemoryHook"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def alloc_preprocess(self, **kwargs):
        pass

    def alloc_postprocess(self, **kwargs):
        pass

    def malloc_preprocess(self, **kwargs):
        pass

    def malloc_postprocess(self, **kwargs):
        pass

    def free_preprocess(self, **kwargs):
        pass

    def free_postprocess(self, **kwargs):
        pass
