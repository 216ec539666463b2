"""Classify a video with a model split across a Dask cluster's workers, one line per frame.

    python examples/stream_video.py VIDEO [--scheduler tcp://HOST:8786] [--weights FILE] [--workload W]

Without --scheduler it starts the local cluster `mcdask demo` runs on. The heart of it is
five lines: a client, and `mcdask.stream` over the video.
"""

from __future__ import annotations

import argparse

from distributed import Client

import mcdask


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("video", help="a video file (or a folder of images)")
    p.add_argument("--scheduler", help="a running Dask scheduler [default: a local cluster]")
    p.add_argument("--weights", help="a .keras / .weights.h5 file [default: seeded weights]")
    p.add_argument("--workload", default="alexnet", help="alexnet, vgg16 or action [default: alexnet]")
    p.add_argument("--devices", type=int, default=3, help="workers of the local cluster [default: 3]")
    args = p.parse_args()

    with Client(args.scheduler) if args.scheduler else mcdask.local_cluster(args.devices) as client:
        for r in mcdask.stream(client, args.workload, args.video, weights=args.weights):
            best = r.top5[0] if r.top5 else None
            what = f"{best.label or best.id}\t{best.score:.3f}" if best else (r.error or "")
            print(f"{r.frame}\t{r.status}\t{what}", flush=True)


if __name__ == "__main__":
    main()
