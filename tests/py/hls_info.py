"""Oracle for `create_hls`: reads a master.m3u8 the way MediaCMS's `Media.hls_info` does.

Usage: python hls_info.py <abs master.m3u8> <MEDIA_ROOT>
Prints JSON: {"info": {<hls_info keys>: url}, "segments": {<key>: [EXTINF durations]},
"target": {<key>: EXT-X-TARGETDURATION}}.

Rules (contract §4.4): for each variant whose playlist file exists, the key is
"<height>_playlist", or "<width>_playlist" when the height is not a standard rung; URLs are
"/media/" + the path relative to MEDIA_ROOT; plus "master_file"; I-frame playlists give
"<height>_iframe" the same way (their byte ranges are checked, listed under "iframes").
"""
import json
import os
import sys

import m3u8

RUNGS = {144, 240, 360, 480, 720, 1080, 1440, 2160}


def url(path, media_root):
    return "/media/" + os.path.relpath(path, media_root)


def main():
    master, media_root = sys.argv[1], sys.argv[2]
    base = os.path.dirname(master)
    parsed = m3u8.load(master)
    info = {"master_file": url(master, media_root)}
    segments, target, iframes = {}, {}, {}
    # MediaCMS lists the I-frame playlists first: "<height>_iframe" (or width), same rules.
    for playlist in parsed.iframe_playlists:
        path = os.path.join(base, playlist.uri)
        if not os.path.exists(path):
            continue
        width, height = playlist.iframe_stream_info.resolution
        key = "%s_iframe" % (height if height in RUNGS else width)
        info[key] = url(path, media_root)
        variant = m3u8.load(path)
        assert variant.is_i_frames_only, path
        ranges = []
        for s in variant.segments:
            length, offset = (int(x) for x in s.byterange.split("@"))
            segment = os.path.join(os.path.dirname(path), s.uri)
            with open(segment, "rb") as f:
                f.seek(offset)
                head = f.read(length)
            # A whole range inside the segment, starting on an MPEG-TS packet.
            assert len(head) == length and head[:1] == b"\x47", (segment, offset, length)
            ranges.append([s.uri, offset, length, s.duration])
        iframes[key] = ranges
    for playlist in parsed.playlists:
        path = os.path.join(base, playlist.uri)
        if not os.path.exists(path):
            continue
        width, height = playlist.stream_info.resolution
        key = "%s_playlist" % (height if height in RUNGS else width)
        info[key] = url(path, media_root)
        variant = m3u8.load(path)
        segments[key] = [s.duration for s in variant.segments]
        target[key] = variant.target_duration
        for s in variant.segments:
            assert os.path.exists(os.path.join(os.path.dirname(path), s.uri)), s.uri
    print(json.dumps({"info": info, "segments": segments, "target": target, "iframes": iframes}))


if __name__ == "__main__":
    main()
