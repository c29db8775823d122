#!/usr/bin/env python3
"""A stand-in `ffmpeg` for a machine without a GPU (tests/gpu_fallback.rs).

Hardware argv (CUDA/NVENC/VAAPI/QSV options or filters) either fail the way FFmpeg 5.1.9 does
for the chosen failure mode -- same exit status (1), same stderr lines -- or, in mode `works`,
run as the equivalent software command on the real ffmpeg, so a "working NVENC" produces a real
output. Everything else runs the real ffmpeg untouched. In mode `works` NVDEC's real limit is
kept: `-hwaccel cuda` on an input NVDEC gives no CUDA frames for (e.g. H.264 High 10) fails
like ffmpeg does at `scale_cuda`, so a plan that sends such an input to NVDEC is caught.

Environment: FAKE_GPU_MODE (works | unsupported_input | device_open | session_limit |
mid_encode), FAKE_GPU_LOG (append one JSON line per call: argv, hardware or not),
FAKE_GPU_REAL_FFMPEG (default /usr/bin/ffmpeg), FAKE_GPU_SW_DELAY (seconds a software call
waits before running, so a test can look at the worker while that run is under way).
"""
import json
import os
import subprocess
import sys
import time

REAL = os.environ.get("FAKE_GPU_REAL_FFMPEG", "/usr/bin/ffmpeg")
MODE = os.environ.get("FAKE_GPU_MODE", "works")

HW_OPTIONS = {"-hwaccel", "-hwaccel_device", "-hwaccel_output_format", "-init_hw_device",
              "-filter_hw_device", "-vaapi_device", "-gpu", "-rc", "-rc_mode", "-cq",
              "-forced-idr", "-forced_idr"}
HW_WORDS = ("_nvenc", "_vaapi", "_qsv", "scale_cuda", "yadif_cuda", "hwupload", "hwdownload")

# FFmpeg 5.1.9's messages (libavfilter/avfiltergraph.c, fftools/ffmpeg.c, libavutil/
# hwcontext_cuda.c, libavcodec/nvenc.c); 0x55d0c0de stands for the pointers it prints.
FAILURES = {
    "unsupported_input": [
        # avfiltergraph.c logs on the graph; the two filter names depend on where the format
        # negotiation breaks (here: software frames meeting scale_cuda's CUDA-only input).
        "[AVFilterGraph @ 0x55d0c0de] Impossible to convert between the formats supported by "
        "the filter 'auto_scale_0' and the filter 'Parsed_scale_cuda_0'",
        "Error reinitializing filters!",
        "Failed to inject frame into filter network: Function not implemented",
        "Error while processing the decoded data for stream #0:0",
    ],
    "device_open": [
        "[AVHWDeviceContext @ 0x55d0c0de] cu->cuInit(0) failed -> CUDA_ERROR_NO_DEVICE: no "
        "CUDA-capable device is detected",
        "Device creation failed: -542398533.",
        "[h264 @ 0x55d0c0de] No device available for decoder: device type cuda needed for "
        "codec h264.",
        "Device setup failed for decoder on input stream #0:0 : Generic error in an external "
        "library",
    ],
    "session_limit": [
        "[h264_nvenc @ 0x55d0c0de] OpenEncodeSessionEx failed: out of memory (10): (no details)",
        "Error initializing output stream 0:0 -- Error while opening encoder for output stream "
        "#0:0 - maybe incorrect parameters such as bit_rate, rate, width or height",
    ],
    "mid_encode": [
        "[h264_nvenc @ 0x55d0c0de] cuMemcpy2DAsync failed -> CUDA_ERROR_ILLEGAL_ADDRESS: an "
        "illegal memory access was encountered",
        "Video encoding failed",
    ],
}

# What NVDEC turns into CUDA frames in FFmpeg 5.1 (codec -> pixel formats).
NVDEC = {"h264": {"yuv420p", "yuvj420p"}, "hevc": {"yuv420p", "yuvj420p", "yuv420p10le"},
         "vp9": {"yuv420p", "yuv420p10le"}, "mpeg2video": {"yuv420p"}}


def is_hardware(argv):
    return any(a in HW_OPTIONS or any(w in a for w in HW_WORDS) for a in argv)


def input_of(argv):
    return argv[argv.index("-i") + 1] if "-i" in argv else None


def nvdec_takes(path):
    """False when NVDEC gives no CUDA frames; None when nothing can read the input (then the
    real ffmpeg fails on it with its own messages, as it would before any hwaccel starts)."""
    probe = subprocess.run(
        [REAL.replace("ffmpeg", "ffprobe"), "-v", "error", "-select_streams", "v:0",
         "-show_entries", "stream=codec_name,pix_fmt", "-of", "json", path],
        capture_output=True, text=True)
    streams = json.loads(probe.stdout or "{}").get("streams")
    if probe.returncode != 0 or not streams:
        return None
    s = streams[0]
    return s.get("pix_fmt") in NVDEC.get(s.get("codec_name"), set())


def software_filter(chain):
    out = []
    for f in chain.split(","):
        name, _, args = f.partition("=")
        if name.startswith("hwupload") or name == "hwdownload":
            continue
        if name == "yadif_cuda":
            out.append("yadif")
        elif name == "scale_cuda":
            w, h = args.split(":")[:2]
            out.append(f"scale={w}:{h}")
        elif name in ("scale_vaapi", "scale_qsv"):
            kv = dict(p.split("=") for p in args.split(":"))
            out.append(f"scale={kv['w']}:{kv['h']}")
        else:
            out.append(f)
    out.append("format=yuv420p")
    return ",".join(out)


def software_argv(argv):
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a in HW_OPTIONS:
            i += 2
            continue
        if a == "-c:v" and i + 1 < len(argv):
            enc = argv[i + 1]
            out += ["-c:v", "libx265" if enc.startswith("hevc") else
                    "libvpx-vp9" if enc.startswith("vp9") else
                    "libx264" if enc.startswith("h264") else enc]
            i += 2
            continue
        if a in ("-filter:v", "-vf") and i + 1 < len(argv):
            out += [a, software_filter(argv[i + 1])]
            i += 2
            continue
        if a == "-preset" and i + 1 < len(argv) and argv[i + 1] in ("p5", "medium"):
            out += ["-preset", "ultrafast"]
            i += 2
            continue
        out.append(a)
        i += 1
    return out


def fail(lines):
    sys.stderr.write("\n".join(lines) + "\n")
    sys.stderr.flush()
    sys.exit(1)


def main():
    argv = sys.argv[1:]
    hardware = is_hardware(argv)
    log = os.environ.get("FAKE_GPU_LOG")
    if log:
        with open(log, "a") as f:
            f.write(json.dumps({"hardware": hardware, "mode": MODE, "argv": argv}) + "\n")
    if not hardware:
        time.sleep(float(os.environ.get("FAKE_GPU_SW_DELAY", "0")))
        os.execv(REAL, [REAL] + argv)
    if MODE in FAILURES:
        fail(FAILURES[MODE])
    src = input_of(argv)
    if "cuda" in argv and "-hwaccel" in argv and src and nvdec_takes(src) is False:
        fail(FAILURES["unsupported_input"])
    os.execv(REAL, [REAL] + software_argv(argv))


if __name__ == "__main__":
    main()
