def getDeviceCount():
    return 1


def memGetInfo():
    return 8 << 30, 16 << 30


def getDeviceProperties(i):
    return {"name": b"FakeCuPy host stand-in", "totalGlobalMem": 16 << 30}
