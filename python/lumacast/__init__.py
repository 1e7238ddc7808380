"""Push numpy frames to a lumacast server and drive its detectors.

    import numpy as np, lumacast

    with lumacast.Pusher("http://127.0.0.1:8080", "ext", bit_depth=12) as pusher:
        pusher.push(np.zeros((480, 640), np.uint16))

See README.md beside this package for the details.
"""

from ._wire import pack_frame
from .client import LumacastError, Pusher, Server

__all__ = ["LumacastError", "Pusher", "Server", "pack_frame"]
__version__ = "0.1.0"
