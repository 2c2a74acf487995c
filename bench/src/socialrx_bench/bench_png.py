"""A tiny chart writer for the bench: line plots into a PNG with zlib and struct only (no matplotlib).

`Chart(width, height)` holds an RGB canvas; `panel(...)` draws one plot (axes, ticks, labelled
series) into a rectangle of it; `save(path)` writes the PNG. Text uses a 3x5 pixel font, scaled.
"""

from __future__ import annotations

import itertools
import math
import struct
import zlib
from pathlib import Path

# 3x5 glyphs, rows top to bottom, 3 bits a row (4 = left pixel).
FONT = {
    "0": (7, 5, 5, 5, 7),
    "1": (2, 6, 2, 2, 7),
    "2": (7, 1, 7, 4, 7),
    "3": (7, 1, 7, 1, 7),
    "4": (5, 5, 7, 1, 1),
    "5": (7, 4, 7, 1, 7),
    "6": (7, 4, 7, 5, 7),
    "7": (7, 1, 1, 2, 2),
    "8": (7, 5, 7, 5, 7),
    "9": (7, 5, 7, 1, 7),
    ".": (0, 0, 0, 0, 2),
    "/": (1, 1, 2, 4, 4),
    "-": (0, 0, 7, 0, 0),
    " ": (0, 0, 0, 0, 0),
    "%": (5, 1, 2, 4, 5),
    "(": (2, 4, 4, 4, 2),
    ")": (2, 1, 1, 1, 2),
    ":": (0, 2, 0, 2, 0),
    "=": (0, 7, 0, 7, 0),
    "+": (0, 2, 7, 2, 0),
    "A": (2, 5, 7, 5, 5),
    "B": (6, 5, 6, 5, 6),
    "C": (7, 4, 4, 4, 7),
    "D": (6, 5, 5, 5, 6),
    "E": (7, 4, 6, 4, 7),
    "F": (7, 4, 6, 4, 4),
    "G": (7, 4, 5, 5, 7),
    "H": (5, 5, 7, 5, 5),
    "I": (7, 2, 2, 2, 7),
    "J": (1, 1, 1, 5, 7),
    "K": (5, 5, 6, 5, 5),
    "L": (4, 4, 4, 4, 7),
    "M": (5, 7, 7, 5, 5),
    "N": (6, 5, 5, 5, 5),
    "O": (7, 5, 5, 5, 7),
    "P": (7, 5, 7, 4, 4),
    "Q": (7, 5, 5, 7, 1),
    "R": (6, 5, 6, 5, 5),
    "S": (7, 4, 7, 1, 7),
    "T": (7, 2, 2, 2, 2),
    "U": (5, 5, 5, 5, 7),
    "V": (5, 5, 5, 5, 2),
    "W": (5, 5, 7, 7, 5),
    "X": (5, 5, 2, 5, 5),
    "Y": (5, 5, 2, 2, 2),
    "Z": (7, 1, 2, 4, 7),
}
BLACK, GREY, WHITE = (0, 0, 0), (200, 200, 200), (255, 255, 255)
COLOURS = [(31, 119, 180), (44, 160, 44), (214, 39, 40), (255, 127, 14), (148, 103, 189)]


class Chart:
    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.pixels = bytearray(WHITE * (width * height))

    def dot(self, x: int, y: int, colour: tuple[int, int, int], size: int = 1) -> None:
        for dx in range(size):
            for dy in range(size):
                px, py = x + dx, y + dy
                if 0 <= px < self.width and 0 <= py < self.height:
                    i = 3 * (py * self.width + px)
                    self.pixels[i : i + 3] = bytes(colour)

    def line(self, x0: int, y0: int, x1: int, y1: int, colour: tuple[int, int, int], size: int = 1) -> None:
        steps = max(abs(x1 - x0), abs(y1 - y0), 1)
        for s in range(steps + 1):
            self.dot(round(x0 + (x1 - x0) * s / steps), round(y0 + (y1 - y0) * s / steps), colour, size)

    def text(self, x: int, y: int, words: str, colour: tuple[int, int, int] = BLACK, scale: int = 2) -> None:
        for ch in words.upper():
            for row, bits in enumerate(FONT.get(ch, FONT[" "])):
                for col in range(3):
                    if bits & (4 >> col):
                        self.dot(x + col * scale, y + row * scale, colour, scale)
            x += 4 * scale

    def panel(
        self,
        box: tuple[int, int, int, int],
        title: str,
        series: list[tuple[str, list[tuple[float, float]]]],
        *,
        x_label: str = "S",
        x_max: float | None = None,
    ) -> None:
        """One plot in box (left, top, right, bottom): each series is (label, [(x, y), ...])."""
        left, top, right, bottom = box
        ox, oy, w, h = left + 70, top + 30, right - left - 90, bottom - top - 70
        points = [p for _, pts in series for p in pts if not math.isnan(p[1])]
        xmax = x_max or max((p[0] for p in points), default=1.0) or 1.0
        ymax = _nice(max((p[1] for p in points), default=1.0) or 1.0)
        self.text(ox, top + 6, title)
        for k in range(6):  # grid and ticks
            gy = oy + h - round(h * k / 5)
            self.line(ox, gy, ox + w, gy, GREY)
            self.text(left + 4, gy - 5, _fmt(ymax * k / 5))
            gx = ox + round(w * k / 5)
            self.text(gx - 8, oy + h + 8, _fmt(xmax * k / 5))
        self.line(ox, oy, ox, oy + h, BLACK, 2)
        self.line(ox, oy + h, ox + w, oy + h, BLACK, 2)
        self.text(ox + w - 8 * len(x_label), oy + h + 24, x_label)
        lx = ox + max(200, 8 * len(title) + 40)  # the legend, after the title
        for n, (label, pts) in enumerate(series):
            colour = COLOURS[n % len(COLOURS)]
            xy = [
                (ox + round(w * x / xmax), oy + h - round(h * min(y, ymax) / ymax)) for x, y in pts if not math.isnan(y)
            ]
            for a, b in itertools.pairwise(xy):
                self.line(*a, *b, colour, 2)
            if len(xy) == 1:
                self.dot(xy[0][0], xy[0][1], colour, 4)
            self.line(lx, top + 11, lx + 20, top + 11, colour, 3)
            self.text(lx + 26, top + 6, label)
            lx += 26 + 8 * len(label) + 24

    def save(self, path: Path) -> None:
        raw = b"".join(
            b"\x00" + bytes(self.pixels[3 * y * self.width : 3 * (y + 1) * self.width]) for y in range(self.height)
        )

        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)  # 8-bit RGB
        path.write_bytes(
            b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
        )


def _nice(value: float) -> float:
    """The next round number above value (1, 2, 5 x 10^k): tidy axis tops."""
    magnitude = 10 ** math.floor(math.log10(value))
    return next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= value)


def _fmt(value: float) -> str:
    return f"{value:.0f}" if value >= 10 or value == 0 else f"{value:.1f}"
