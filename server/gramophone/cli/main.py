"""The ``gramophone`` command line: ``stylize``, ``style learn|list|show``, ``serve``.

Bad input ends with one line on stderr and exit code 2, never a traceback, and never
leaves a partial output file behind.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

EXIT_BAD_INPUT = 2


class UsageError(Exception):
    """A problem with what the user asked for, reported in one line."""


class Parser(argparse.ArgumentParser):
    """argparse that reports errors in one line with exit code 2 (no usage dump)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see {self.prog} --help)")


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text}")
    return value


def build_parser() -> Parser:
    parser = Parser(prog="gramophone", description="Neural style transfer for audio, offline and live over OSC.")
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    stylize = commands.add_parser("stylize", help="make a clip sound like one or more style clips",
                                  description="Stylise CONTENT toward STYLE(s) and write the result.")
    stylize.add_argument("content", type=Path, help="the audio to transform (WAV, FLAC, OGG, AIFF)")
    stylize.add_argument("styles", nargs="+", help="style clips, names of learned styles (see 'style learn'), or a built-in style: voice, whisper")
    stylize.add_argument("-o", "--output", type=Path, required=True, help="output .wav or .flac")
    stylize.add_argument("--preset", default="default", help="default, low-latency, article or ulyanov")
    stylize.add_argument("--style-weight", type=_non_negative, help="pull toward the style (default: the preset's, 1 for default; 0 = no effect)")
    stylize.add_argument("--content-weight", type=_non_negative, help="hold on to the content (default: the preset's, 0.3 for default)")
    stylize.add_argument("--iterations", type=int, help="optimiser iterations")
    stylize.add_argument("--lr", type=float, help="learning rate")
    stylize.add_argument("--optimizer", choices=["adam", "lbfgs"])
    stylize.add_argument("--init", choices=["content", "noise"], help="start from the content or from noise")
    stylize.add_argument("--phase", choices=["content", "griffinlim"], help="resynthesis phase")
    stylize.add_argument("--colour", type=float, help="closed-form colouring strength 0–1 (default: the preset's, 1 for default)")
    stylize.add_argument("--pitch", type=float, help="pitch shift in semitones, -24–24, formant-preserving, whatever --style-weight is (default 0)")
    stylize.add_argument("--formant", type=float, help="formant (spectral envelope) shift in semitones, -12–12 (default 0)")
    stylize.add_argument("--pitch-follow", type=float, help="0–1 of the way the content's median F0 moves to the style's, on top of --pitch (default: the preset's, 0 for default; nothing for an unvoiced style)")
    stylize.add_argument("--formant-follow", type=float, help="0–1 of the way the content's formants move to the style's, on top of --formant (default: the preset's, 0 for default)")
    stylize.add_argument("--sample-rate", type=_positive_int, help="work and write at this rate")
    stylize.add_argument("--seed", type=int, default=0, help="seed of the random networks and noise (default 0)")
    stylize.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    stylize.add_argument("--bits", default="16", choices=["16", "24", "float"], help="output sample format")
    stylize.add_argument("--plot", type=Path, help="write spectrograms and the loss curve to this PNG")
    stylize.add_argument("--report", action="store_true", help="print quality measures, dry against wet")
    stylize.add_argument("--cache-dir", type=Path, help="style cache folder (default: user cache)")
    stylize.add_argument("--quiet", action="store_true", help="no progress bar")

    style = commands.add_parser("style", help="learn, list and show cached style targets")
    style_commands = style.add_subparsers(dest="style_command", required=True, parser_class=Parser)
    learn = style_commands.add_parser("learn", help="learn a named style from one or more clips")
    learn.add_argument("files", nargs="+", type=Path)
    learn.add_argument("--name", required=True)
    learn.add_argument("--preset", default="default")
    learn.add_argument("--cache-dir", type=Path)
    listing = style_commands.add_parser("list", help="list learned styles")
    listing.add_argument("--cache-dir", type=Path)
    show = style_commands.add_parser("show", help="show one learned style")
    show.add_argument("name")
    show.add_argument("--cache-dir", type=Path)

    try:
        from .serve import add_serve_parser
    except ImportError:  # the server's command line is optional for the offline tools
        pass
    else:
        add_serve_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        if args.command == "stylize":
            from .commands import run_stylize
            return run_stylize(args)
        if args.command == "style":
            from .commands import run_style
            return run_style(args)
        from .serve import run_serve
        return run_serve(args)
    except UsageError as error:
        print(f"gramophone: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ValueError as error:  # AudioError and every validation error
        print(f"gramophone: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except FileNotFoundError as error:
        print(f"gramophone: error: {error.filename}: no such file", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("gramophone: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
