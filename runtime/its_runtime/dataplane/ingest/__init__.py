"""Camera ingestion: PyAV (FFmpeg) decoding of RTSP, HTTP (MJPEG) and file streams.

Each camera gets one decode thread (PyAV blocks, and FFmpeg releases the GIL while it
decodes) that hands frames to the asyncio side through a one-frame slot where the
newest frame wins. Inference that falls behind therefore sees fresh frames and a
counted drop, never a growing queue: a traffic camera's value is its present.

Each connection decodes on the CPU (FFmpeg + swscale) or on the GPU (NVDEC, frames kept
on the device and converted by torch), as ``cameraDecode`` asks and the machine allows
(``decode.py`` decides, ``convert.py`` fits frames to the model input on that path).
"""
