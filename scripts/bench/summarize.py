#!/usr/bin/env python3
"""Summarises a ladder.sh work directory as Markdown: medians per source x variant, ratios
against MediaCMS's pipeline (a), per-command medians, and SSIM of b against a.

Usage: summarize.py WORK_DIR  (reads WORK_DIR/results.tsv, */steps.log, *.ssim,
*/b/r*/full_path.json)
"""

import collections
import glob
import json
import os
import statistics
import sys


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def main(work):
    runs = collections.defaultdict(list)  # (src, variant) -> [(wall, cpu, rss_kb)]
    header = []
    with open(os.path.join(work, "results.tsv")) as fh:
        for line in fh:
            if line.startswith("#"):
                header.append(line[1:].strip())
                continue
            src, variant, _rep, wall, cpu, rss = line.split("\t")
            runs[(src, variant)].append((float(wall), float(cpu), int(rss)))

    out = []
    for h in header:
        out.append(f"_{h}_\n")
    out.append("| source | variant | runs | wall s (each) | median wall s | median CPU s | cores | peak RSS MB | wall / a | CPU / a |")
    out.append("|---|---|---|---|---|---|---|---|---|---|")
    order = {"a": 0, "b": 1, "c": 2}
    for (src, variant) in sorted(runs, key=lambda k: (k[0], order.get(k[1], 9), k[1])):
        rs = runs[(src, variant)]
        wall = median([r[0] for r in rs])
        cpu = median([r[1] for r in rs])
        rss = max(r[2] for r in rs) / 1024
        base = runs.get((src, "a"))
        if base and variant != "a":
            ratio_w = f"{wall / median([r[0] for r in base]):.3f}"
            ratio_c = f"{cpu / median([r[1] for r in base]):.3f}"
        else:
            ratio_w = ratio_c = "1" if variant == "a" else "–"
        each = ", ".join(f"{r[0]:.2f}" for r in rs)
        out.append(
            f"| {src} | {variant} | {len(rs)} | {each} | {wall:.2f} | {cpu:.2f} | "
            f"{cpu / wall:.2f} | {rss:.0f} | {ratio_w} | {ratio_c} |"
        )

    # Per command: median wall / CPU over the runs, and the largest RSS.
    steps = collections.OrderedDict()
    for path in sorted(glob.glob(os.path.join(work, "*", "*", "r*", "steps.log"))):
        parts = path.split(os.sep)
        src, variant = parts[-4], parts[-3]
        with open(path) as fh:
            for line in fh:
                f = line.split()
                if len(f) != 5 or f[0].startswith("Command"):
                    continue
                key = (src, variant, f[0])
                steps.setdefault(key, []).append((float(f[1]), float(f[2]) + float(f[3]), int(f[4])))
    if steps:
        out.append("\nPer command (median wall s / median CPU s / max RSS MB over the runs):\n")
        out.append("| source | variant | command | wall s | CPU s | RSS MB |")
        out.append("|---|---|---|---|---|---|")
        for (src, variant, name), rs in steps.items():
            out.append(
                f"| {src} | {variant} | {name} | {median([r[0] for r in rs]):.2f} | "
                f"{median([r[1] for r in rs]):.2f} | {max(r[2] for r in rs) / 1024:.0f} |"
            )

    # b against the encoders-only bound (issue 9's "CPU within 1.10x of c").
    bound = []
    for src in sorted({k[0] for k in runs}):
        b, c = runs.get((src, "b")), runs.get((src, "c"))
        if b and c:
            cpu_b, cpu_c = median([r[1] for r in b]), median([r[1] for r in c])
            bound.append(f"| {src} | {cpu_b:.2f} | {cpu_c:.2f} | {cpu_b / cpu_c:.3f} |")
    if bound:
        out.append("\nb's CPU against the encoders-only bound c (medians):\n")
        out.append("| source | b CPU s | c CPU s | b / c |")
        out.append("|---|---|---|---|")
        out += bound

    # b's own timeline (full_path.py): when the first rendition was playable.
    timeline = collections.defaultdict(list)
    for path in sorted(glob.glob(os.path.join(work, "*", "b", "r*", "full_path.json"))):
        src = path.split(os.sep)[-4]
        with open(path) as fh:
            line = fh.read().strip()
        if line:
            timeline[src].append(json.loads(line))
    if timeline:
        out.append("\nb's timeline from the first publish (medians): the first playable rendition, "
                   "and the last Encoding ending:\n")
        out.append("| source | runs | first playable s | all ended s | first / all |")
        out.append("|---|---|---|---|---|")
        for src, ts in timeline.items():
            first = median([t["first_playable_s"] for t in ts if t["first_playable_s"]])
            wall = median([t["wall_s"] for t in ts])
            out.append(f"| {src} | {len(ts)} | {first:.2f} | {wall:.2f} | {first / wall:.3f} |")

    ssim = []
    for path in sorted(glob.glob(os.path.join(work, "*.ssim"))):
        with open(path) as fh:
            ssim += [line.split() for line in fh if line.strip()]
    if ssim:
        out.append("\nSSIM (`All:`) of b's renditions against a's (run 1):\n")
        out.append("| source | rung | SSIM |")
        out.append("|---|---|---|")
        for src, _what, rung, value in ssim:
            out.append(f"| {src} | {rung} | {value} |")
    print("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1])
