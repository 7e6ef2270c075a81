"""Report figures: matplotlib (imported lazily; Figure objects, no pyplot or GUI backend) drawn to
self-contained inline SVG strings.

Every function takes plain numbers (metrics.json, arrays.npz, CSV columns) and returns SVG
markup ready to inline in HTML: no XML prolog, ids prefixed so several figures can share one
document, no timestamps (the same run gives the same bytes).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import io
import math
import re

import numpy as np

# one colour per term, shared by every figure
COLORS = {"G": "#222222", "S1": "#1f5fa8", "S12": "#7b4fa0", "S2": "#d0661c", "E": "#8c8c8c", "reg": "#3a8f5b"}
TERM_LABELS = {"G": "‖G‖", "S1": "‖S1‖", "S12": "‖S12‖", "S2": "‖S2‖", "E": "‖E‖", "reg": "‖λ∇R‖"}
REGIME_COLORS = {
    "no-structure": "#d9d9d9",
    "residue-dominated": "#1f5fa8",
    "spike-dominated": "#d0661c",
    "rank-two": "#7b4fa0",
    "mixed": "#4d9a6a",
}
WIDTH = 6.6  # inches: the text width of an A4/Letter page with the report's margins

STYLE = {
    "svg.hashsalt": "gradrank",
    "svg.fonttype": "path",
    "font.size": 8,
    "axes.titlesize": 8.5,
    "axes.labelsize": 8,
    "legend.fontsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.linewidth": 0.6,
    "lines.linewidth": 1.2,
    "legend.frameon": False,
    "figure.dpi": 72,
}


def styled(fn):
    """Draw under the report style in an rc_context: matplotlib's global state is left as it was."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import matplotlib

        with matplotlib.rc_context(STYLE):
            return fn(*args, **kwargs)

    return wrapper


def new_figure(nrows: int = 1, ncols: int = 1, *, figsize, layout=None, **kw):
    """A figure without pyplot (no backend switch, nothing to close): (fig, axes)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout=layout)
    return fig, fig.subplots(nrows, ncols, **kw)


def _plain_log_labels(fig) -> None:
    """Log axes labelled with plain numbers (no mathtext: it costs more than the rest of a figure),
    minor labels (2, 5; every digit under a factor 3) only when fewer than two decade ticks are in
    view: never an axis with one label, never overlapping minor labels over decades."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullLocator

    for ax in fig.axes:
        for axis, lim in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            if axis.get_scale() != "log":
                continue
            if isinstance(axis.get_major_locator(), FixedLocator):  # ticks chosen by the figure (e.g. the n of a study)
                axis.set_minor_locator(NullLocator())
                continue
            lo, hi = sorted(lim)
            axis.set_major_formatter(FuncFormatter(lambda v, _: _tick_number(v)))
            if lo > 0 and _decades_in(lo, hi) < 2:
                axis.set_minor_locator(LogLocator(subs=tuple(range(2, 10)) if hi / lo < 3 else (2.0, 5.0)))
                axis.set_minor_formatter(FuncFormatter(lambda v, _: _tick_number(v)))
            else:  # no minor ticks: each one costs a tick object and its layout
                axis.set_minor_locator(NullLocator())


def _decades_in(lo: float, hi: float) -> int:
    """How many powers of ten lie in [lo, hi] (the major ticks of a log axis)."""
    return max(0, math.floor(math.log10(hi) + 1e-9) - math.ceil(math.log10(lo) - 1e-9) + 1)


def _tick_number(v: float) -> str:
    """1000 -> '1000', 0.002 -> '0.002', 1e-7 -> '1e-7': short labels for log axes."""
    a = abs(v)
    if a == 0 or 1e-3 <= a < 1e5:
        return f"{v:.0f}" if float(v).is_integer() else f"{v:.3g}"
    return f"{v:.0e}".replace("e-0", "e-").replace("e+0", "e").replace("e+", "e")


_COLLECT: contextvars.ContextVar[list | None] = contextvars.ContextVar("collect", default=None)


@contextlib.contextmanager
def collect():
    """Inside the block every figure drawn is also appended to the yielded list (as a matplotlib
    Figure), for notebooks (gradrank.api.Result.figures)."""
    made: list = []
    token = _COLLECT.set(made)
    try:
        yield made
    finally:
        _COLLECT.reset(token)


def figure_svg(fig, key: str, label: str, tight: bool = False) -> str:
    """The figure as inline SVG with every id prefixed by `key` (unique within a document); `tight`
    crops to what is drawn (an extra layout pass: for figures whose labels vary, e.g. sweep maps)."""
    if (made := _COLLECT.get()) is not None:
        made.append(fig)
    return svg(fig, key, label, tight)


def svg(fig, key: str, label: str, tight: bool = False) -> str:
    """A Figure as inline SVG markup, ids prefixed by `key`, labelled for screen readers."""
    _plain_log_labels(fig)
    buf = io.StringIO()
    kw = {"bbox_inches": "tight", "pad_inches": 0.04} if tight else {}
    fig.savefig(buf, format="svg", metadata={"Date": None}, **kw)
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)
    text = re.sub(r'\bid="([^"]+)"', rf'id="{key}-\1"', text)
    text = re.sub(r'href="#([^"]+)"', rf'href="#{key}-\1"', text)
    text = re.sub(r"url\(#([^)]+)\)", rf"url(#{key}-\1)", text)
    return text.replace("<svg ", f'<svg role="img" aria-label="{_attr(label)}" ', 1)


def _attr(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")


def _term_lines(ax, norms: dict, floor: float = 0.0, keys=("S1", "S12", "S2", "E")) -> None:
    """A line per term norm; a term at rounding level (≤ floor·‖G‖) is zero and gets none."""
    zero = floor * norms.get("G", 0.0)
    for k in keys:
        if k in norms and np.isfinite(norms[k]) and norms[k] > max(zero, 0.0):
            ax.axvline(
                norms[k], color=COLORS[k], ls="--" if k == "E" else "-", lw=1.1, label=f"{TERM_LABELS[k]} = {norms[k]:.3g}"
            )


# ---------------------------------------------------------------------------- single run


@styled
def spectrum(values: np.ndarray, e_values: np.ndarray | None, norms: dict, edge: float | None, floor: float = 0.0) -> str:
    """Figure 1: histogram of the singular values of G with the term norms marked (none for a term
    at rounding level, ≤ floor·‖G‖), and the sorted spectrum."""
    s = np.sort(np.asarray(values, float))[::-1]
    s = s[s > s[0] * 1e-10] if s.size and s[0] > 0 else s
    fig, (ax, ax2) = new_figure(1, 2, figsize=(WIDTH, 2.5), gridspec_kw={"width_ratios": [1.45, 1]})
    out = s > edge if edge is not None else np.zeros(s.size, bool)
    hi = max(s.max(initial=0), *(norms.get(k, 0) for k in ("S1", "S12", "S2", "E"))) * 1.06
    bins = np.linspace(0, hi or 1, 121)
    ax.stairs(np.histogram(s[~out], bins)[0], bins, fill=True, color="#9aa8b8", label="bulk")
    if out.any():
        ax.stairs(np.histogram(s[out], bins)[0], bins, fill=True, color=COLORS["G"], label=f"outliers ({int(out.sum())})")
        ax.plot(s[out], np.zeros(int(out.sum())), "v", color=COLORS["G"], ms=5, clip_on=False, transform=ax.get_xaxis_transform())
    _term_lines(ax, norms, floor)
    ax.set(xlabel="singular value of G", ylabel="count (log scale)", xlim=(0, bins[-1]))
    ax.set_yscale("log")
    ax.set_ylim(bottom=0.5)
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.01, 1, 0.2), ncol=3, mode="expand", borderaxespad=0)
    k = np.arange(1, s.size + 1)
    ax2.semilogy(k, s, color=COLORS["G"], lw=1.1, label="G")
    if e_values is not None:
        e = np.sort(np.asarray(e_values, float))[::-1][: s.size]
        e = e[e > 0]
        ax2.semilogy(np.arange(1, e.size + 1), e, color=COLORS["E"], lw=1, ls="--", label="E (bulk)")
    if out.any():
        ax2.semilogy(k[out], s[out], "o", color=COLORS["G"], ms=3.5, mfc="white")
    if edge is not None:
        ax2.axhline(edge, color="#a33", lw=0.8, ls=":", label=f"bulk edge {edge:.3g}")
    ax2.set(xlabel="index k", ylabel="s_k (log scale)", title="sorted spectrum")
    ax2.set_xscale("log")
    ax2.legend(loc="lower left")
    fig.subplots_adjust(left=0.08, right=0.985, bottom=0.17, top=0.8, wspace=0.28)
    return figure_svg(fig, "fig-spectrum", "singular values of G")


@styled
def term_norms(norms: dict, shares: dict) -> str:
    """Figure 2: operator norms of G and its four terms, and their shares of ‖G‖_F²."""
    keys = [k for k in ("G", "S1", "S12", "S2", "E", "reg") if k in norms]
    fig, (ax, ax2) = new_figure(1, 2, figsize=(WIDTH, 2.1), gridspec_kw={"width_ratios": [1.3, 1]})
    vals = [norms[k] for k in keys]
    bars = ax.bar([TERM_LABELS[k] for k in keys], vals, color=[COLORS[k] for k in keys], width=0.65)
    ax.bar_label(bars, fmt="%.3g", fontsize=7, padding=1.5)
    ax.set(ylabel="operator norm", title="term norms", ylim=(0, max(vals, default=1) * 1.18 or 1))
    sk = [k for k in ("S1", "S12", "S2", "E") if k in shares]
    bars = ax2.barh([f"{k}" for k in sk][::-1], [shares[k] for k in sk][::-1], color=[COLORS[k] for k in sk][::-1], height=0.6)
    ax2.bar_label(bars, fmt="%.2f", fontsize=7, padding=1.5)
    ax2.set(xlabel="share of ‖G‖²_F", title="energy shares", xlim=(0, max(1.0, max((shares[k] for k in sk), default=0) * 1.15)))
    fig.subplots_adjust(left=0.09, right=0.97, bottom=0.2, top=0.88, wspace=0.25)
    return figure_svg(fig, "fig-norms", "term norms")


@styled
def alignment(align: dict, n_outliers: int) -> str:
    """Figure 3: |cos| of the top-k singular vectors against the predicted directions, as heatmaps."""
    left = [(lab, align[key]) for key, lab in (("residue", "X_Bᵀr"), ("spike", "q")) if key in align]
    right = [(lab, align[key]) for key, lab in (("right_mu", "a∘μ"), ("right_spike", "a∘(Σ′⊥ᵀ(z∘r))")) if key in align]
    k = max((len(v) for _, v in left + right), default=0)
    fig, axes = new_figure(1, 2, figsize=(WIDTH * 0.72, 0.55 + 0.23 * k))
    for ax, cols, title in ((axes[0], left, "left vectors u_k"), (axes[1], right, "right vectors v_k")):
        M = np.array([np.pad(np.asarray(v, float), (0, k - len(v)), constant_values=np.nan) for _, v in cols]).T.reshape(
            k, len(cols)
        )
        mesh(ax, M, cmap="Blues", vmin=0, vmax=1)
        ax.invert_yaxis()
        for (i, j), v in np.ndenumerate(M):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6.5, color="white" if v > 0.6 else "#222")
        ax.set_xticks(range(len(cols)), [c for c, _ in cols])
        # k labels once, on the left panel (the rows are the same k): none crowd the left heatmap
        ax.set_yticks(range(k), [f"k={i + 1}" + (" ●" if i < n_outliers else "") for i in range(k)] if ax is axes[0] else [])
        ax.tick_params(length=0)
        ax.set_title(title)
        ax.spines[:].set_visible(False)
    return figure_svg(fig, "fig-align", "alignment heatmap", tight=True)


@styled
def data_diagnostics(
    eigenvalues: np.ndarray, alpha: float | None, zeta: float | None, n: int | None, r2: float | None = None
) -> str:
    """Figure 4: bulk eigenvalues on log-log axes with the power law k^-alpha (with the fit's R² when
    alpha was fitted: a poor fit says so), and the spike variance zeta²."""
    lam = np.sort(np.asarray(eigenvalues, float))[::-1]
    lam = lam[lam > lam[0] * 1e-12] if lam.size and lam[0] > 0 else lam
    k = np.arange(1, lam.size + 1)
    fig, ax = new_figure(figsize=(WIDTH * 0.6, 2.3))
    ax.loglog(k, lam, color=COLORS["E"], lw=2, label="bulk eigenvalues λ_k")
    if alpha is not None and np.isfinite(alpha) and lam.size:
        fit = k[: max(3, int(0.9 * k.size))]
        c = float(np.mean(np.log(lam[: fit.size]) + alpha * np.log(fit)))  # intercept of log λ = c - α log k
        ax.loglog(
            fit,
            np.exp(c) * fit**-alpha,
            color=COLORS["S1"],
            lw=0.9,
            ls="--",
            label=f"fit k^(−α), α = {alpha:.3g}" + (f", R² = {r2:.2f}" if r2 is not None and np.isfinite(r2) else ""),
        )
    if zeta is not None and zeta > 0:
        nu = f", ν = {math.log(zeta) / math.log(n):.3g}" if n and n > 1 else ""
        ax.axhline(zeta**2, color=COLORS["S2"], lw=1.1, label=f"spike ζ² = {zeta**2:.3g} (ζ = {zeta:.3g}{nu})")
    ax.set(xlabel="k", ylabel="eigenvalue", title="data: bulk spectrum and spike strength")
    ax.legend(loc="best")
    fig.subplots_adjust(left=0.14, right=0.97, bottom=0.18, top=0.88)
    return figure_svg(fig, "fig-data", "bulk spectrum and spike strength")


# ---------------------------------------------------------------------------- training


# trajectory.csv column -> (legend label, colour, line style, width)
TRAJ_LINES = {
    "train_loss": ("train loss", "#222222", "-", 1.2),
    "test_loss": ("test loss", "#d0661c", "--", 1.2),
    "G": ("‖G‖", "#222222", "-", 2.6),
    "S1": ("‖S1‖ residue spike", COLORS["S1"], "-", 1.1),
    "S12": ("‖S12‖ interpolant", COLORS["S12"], "-.", 1.1),
    "S2": ("‖S2‖ data spike", COLORS["S2"], "-", 1.1),
    "E": ("‖E‖ bulk", COLORS["E"], "--", 1.1),
    "outliers": ("outliers", "#a33333", "-", 1.2),
    "stable_rank": ("stable rank", "#222222", "--", 1.1),
    "align_residue_1": ("u₁ · X_Bᵀr", COLORS["S1"], "-", 1.2),
    "align_residue_2": ("u₂ · X_Bᵀr", COLORS["S1"], ":", 1.2),
    "align_spike_1": ("u₁ · q", COLORS["S2"], "-", 1.2),
    "align_spike_2": ("u₂ · q", COLORS["S2"], ":", 1.2),
    "feat_residue_1": ("v₁ · X_Bᵀr", COLORS["S1"], "-", 1.2),
    "feat_residue_2": ("v₂ · X_Bᵀr", COLORS["S1"], ":", 1.2),
    "feat_spike_1": ("v₁ · q", COLORS["S2"], "-", 1.2),
    "feat_spike_2": ("v₂ · q", COLORS["S2"], ":", 1.2),
    "feat_index_1": ("v₁ in index span", COLORS["reg"], "-", 1.2),
    "feat_index_2": ("v₂ in index span", COLORS["reg"], ":", 1.2),
    "batch_G": ("‖G‖ batch", "#222222", "-", 2.6),
    "batch_S1": ("‖S1‖ batch", COLORS["S1"], "-", 1.1),
    "batch_S12": ("‖S12‖ batch", COLORS["S12"], "-.", 1.1),
    "batch_S2": ("‖S2‖ batch", COLORS["S2"], "-", 1.1),
    "batch_E": ("‖E‖ batch", COLORS["E"], "--", 1.1),
    "drift": ("‖W − W₀‖_F", "#222222", "-", 1.2),
}


def _log_ok(values) -> bool:
    """A log axis when the values are positive and span more than a decade (and stay in range)."""
    v = np.concatenate([np.asarray(x, float) for x in values])
    v = v[np.isfinite(v)]
    return bool(v.size) and v.min() > 0 and 10 * v.min() < v.max() < 1e300 * v.min()


def trajectory_panels(cols: dict[str, np.ndarray]) -> list[tuple[str, list[tuple[str, str | None, str, str, float]]]]:
    """What the trajectory figure draws: [(panel title, [(column, legend label, colour, style, width)])],
    panels with no finite value left out. Every line has a legend label (s₃ … s_k share one)."""

    def have(names):
        return [c for c in names if c in cols and np.isfinite(cols[c]).any()]

    def line(name):
        sv = re.fullmatch(r"s(\d+)", name)
        if sv:
            i = int(sv.group(1))
            label = "s₁" if i == 1 else ("s₂ … sₖ" if i == 2 else None)
            return (name, label, "#222222" if i == 1 else "#9aa4b0", "-", 1.3 if i == 1 else 0.7)
        return (name, *TRAJ_LINES.get(name, (name, None, "-", 1.1)))

    panels = [
        ("loss", have(("train_loss", "test_loss"))),
        ("term norms of G", have(("G", "S1", "S12", "S2", "E"))),
        ("top singular values", sorted(have([c for c in cols if re.fullmatch(r"s\d+", c)]), key=lambda c: int(c[1:]))),
        ("rank", have(("outliers", "stable_rank"))),
        ("|cos| of G's top left vectors", have([f"align_{w}_{i}" for i in (1, 2) for w in ("residue", "spike")])),
        ("features: |cos| of W − W₀'s top input directions", have([c for c in TRAJ_LINES if c.startswith("feat_")])),
        ("mini-batch gradient: term norms", have([c for c in TRAJ_LINES if c.startswith("batch_")])),
        ("drift", have(("drift",))),
    ]
    return [(t, [line(c) for c in names]) for t, names in panels if names]


@styled
def trajectory(cols: dict[str, np.ndarray]) -> str | None:
    """Figure 5: loss, term norms, top singular values, rank, alignments of G's top vectors, feature
    learning (W − W0's top input directions), the mini-batch gradient's terms and ‖W − W0‖, on one step axis."""
    if "step" not in cols:
        return None
    panels = trajectory_panels(cols)
    if not panels:
        return None
    ncols = 2 if len(panels) > 3 else 1
    nrows = -(-len(panels) // ncols)
    fig, grid = new_figure(nrows, ncols, figsize=(WIDTH, 0.4 + 1.45 * nrows), layout="constrained", sharex=True, squeeze=False)
    axes = grid.reshape(-1)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    step = cols["step"]
    o = cols.get("outliers")
    jumps = [] if o is None else [step[i] for i in range(1, o.size) if o[i] != o[i - 1] and np.isfinite(o[i - 1 : i + 1]).all()]
    for ax, (title, lines) in zip(axes, panels):
        for x in jumps[:8]:  # where the outlier count changes
            ax.axvline(x, color="#a33", lw=0.6, ls=":", alpha=0.7)
        for name, label, color, ls, lw in lines:
            kw = {"where": "post"} if name == "outliers" else {}
            (ax.step if name == "outliers" else ax.plot)(step, cols[name], color=color, lw=lw, ls=ls, label=label, **kw)
        if title.startswith(("loss", "term norms", "top singular", "mini-batch")) and _log_ok([cols[n] for n, *_ in lines]):
            ax.set_yscale("log")
        if "|cos|" in title:
            ax.set_ylim(-0.03, 1.03)
        ax.set_title(title, loc="left", fontsize=7, pad=2)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=6, handlelength=2.0, borderaxespad=0, labelspacing=0.25)
        ax.xaxis.set_tick_params(labelbottom=True)
    for col in range(ncols):  # under the lowest panel of each column
        [ax for ax in grid[:, col] if ax.get_visible()][-1].set_xlabel("step")
    return figure_svg(fig, "fig-train", "training trajectory")


# ---------------------------------------------------------------------------- sweeps


def _plain(text) -> str:
    """A user string drawn literally (a '$' would start matplotlib mathtext)."""
    return str(text).replace("$", r"\$")


def _ticks(values) -> list[str]:
    return [f"{v:.3g}" if isinstance(v, float) else _plain(v) for v in values]


def _categorical_ticks(ax, positions, labels, axis: str = "x") -> None:
    """Category names that never overlap: vertical when long or many, else level; a zipped level
    ('nu=0.3, alpha=0.5, ...') gets one line per key, so its label stays short enough for the axes."""
    labels = _ticks(labels)
    long = len(labels) > 4 or max((len(t) for t in labels), default=0) > 6
    if axis == "x":
        ax.set_xticks(positions, [t.replace(", ", ",\n") for t in labels], rotation=90 if long else 0)
    else:
        ax.set_yticks(positions, labels)


@styled
def regime_map(xkey: str, xs: list, ykey: str | None, ys: list, regimes: list[list[str | None]], key: str = "fig-regime") -> str:
    """Regime (most frequent over seeds) on the grid of two swept keys (ykey None: one row)."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    names = list(REGIME_COLORS)
    M = np.array([[names.index(r) if r in names else np.nan for r in row] for row in regimes], float)
    fig, ax = new_figure(figsize=(min(WIDTH * 0.8, 2.4 + 0.45 * len(xs)), 0.6 + 0.3 * len(ys)))
    mesh(ax, M, cmap=ListedColormap(list(REGIME_COLORS.values())), vmin=-0.5, vmax=len(names) - 0.5)
    grid_axes(ax, xkey, xs, ykey, ys)
    present = [n for n in names if n in {r for row in regimes for r in row}]
    ax.legend(handles=[Patch(color=REGIME_COLORS[n], label=n) for n in present], loc="center left", bbox_to_anchor=(1.02, 0.5))
    ax.set_title("regime")
    return figure_svg(fig, key, "regime map", tight=True)


@styled
def metric_map(
    xkey: str, xs: list, ykey: str | None, ys: list, values: np.ndarray, undefined=None, title: str = "", key: str = "fig-map"
) -> str:
    """A metric (mean over seeds) on the grid of two swept keys. Undefined cells (a ratio over a
    rounding-level zero) are drawn grey, labelled 'undef.' and kept out of the colour scale, which
    is logarithmic when the positive values span more than a decade."""
    from matplotlib.colors import LogNorm

    R = np.asarray(values, float)
    und = np.zeros(R.shape, bool) if undefined is None else np.asarray(undefined, bool)
    fin = R[np.isfinite(R)]
    pos = fin[fin > 0]
    norm = LogNorm(pos.min(), pos.max()) if pos.size == fin.size and pos.size and pos.max() > 10 * pos.min() else None
    fig, ax = new_figure(figsize=(min(WIDTH * 0.8, 2.0 + 0.45 * len(xs)), 0.6 + 0.3 * len(ys)))
    if und.any():
        from matplotlib.colors import ListedColormap

        mesh(ax, np.where(und, 0.0, np.nan), cmap=ListedColormap(["#d4d4d4"]), vmin=0, vmax=1)
    im = mesh(ax, R, cmap="viridis", norm=norm)
    if R.size <= 150:
        for (i, j), v in np.ndenumerate(R):
            if np.isfinite(v):
                r, g, b, _ = im.cmap(im.norm(v))
                color = "#222" if 0.299 * r + 0.587 * g + 0.114 * b > 0.55 else "white"
                ax.text(j, i, f"{v:.2g}", ha="center", va="center", fontsize=6, color=color)
            elif und[i, j]:
                ax.text(j, i, "undef.", ha="center", va="center", fontsize=5.5, color="#444")
    grid_axes(ax, xkey, xs, ykey, ys)
    cb = fig.colorbar(im, ax=ax, fraction=0.05, pad=0.02)
    cb.solids.set_rasterized(False)  # vector quads: no embedded raster (WeasyPrint drops it)
    cb.solids.set_edgecolor("face")
    if norm is not None:  # decade labels only: minor labels of a log bar overlap
        from matplotlib.ticker import NullFormatter

        cb.ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_title(_plain(title))
    return figure_svg(fig, key, _plain(title) or "metric map", tight=True)


def mesh(ax, M: np.ndarray, **kw):
    """A heatmap of cells centred on integer coordinates, drawn as vector quads (no embedded raster image)."""
    rows, cols = M.shape
    return ax.pcolormesh(
        np.arange(cols + 1) - 0.5, np.arange(rows + 1) - 0.5, np.ma.masked_invalid(M), edgecolors="white", linewidth=0.5, **kw
    )


def grid_axes(ax, xkey, xs, ykey, ys) -> None:
    _categorical_ticks(ax, range(len(xs)), xs)
    ax.set_xlabel(_plain(xkey))
    ax.set_yticks(range(len(ys)), _ticks(ys) if ykey else [""])
    ax.set_ylabel(_plain(ykey or ""))
    ax.tick_params(length=0)
    ax.spines[:].set_visible(False)


def band(mean: np.ndarray, sd: np.ndarray, positive: bool) -> tuple[np.ndarray, np.ndarray]:
    """mean ± sd; for a quantity that is never negative the lower edge stops at zero."""
    lo, hi = mean - sd, mean + sd
    return (np.maximum(lo, 0.0) if positive else lo), hi


@styled
def seed_bands(
    xkey: str,
    xs: list,
    series: dict[str, list[tuple[str, np.ndarray, np.ndarray]]],
    series_key: str | None = None,
    key: str = "fig-lines",
) -> str:
    """Line plots over one swept key: per panel, lines (mean over seeds) with mean ± sd bands.

    `series` maps a panel title to [(label, mean, sd)], arrays aligned with xs. A quantity that is
    never negative keeps its band above zero, and gets a log axis when it spans more than a decade
    (the band's lower edge then stops at the axis); a numeric x spanning more than two decades gets
    a log axis too. Panels sharing their series share one legend above them (never over the data),
    and the x label is written once; a series undefined at every x is named in its panel."""
    import matplotlib

    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in xs)
    x = np.asarray(xs, float) if numeric else np.arange(len(xs))
    ncols = min(len(series), 3)
    nrows = -(-len(series) // ncols)
    fig, axes = new_figure(nrows, ncols, figsize=(WIDTH, 0.45 + 2.1 * nrows), squeeze=False, layout="constrained")
    for ax in axes.reshape(-1)[len(series) :]:
        ax.set_visible(False)
    every = list(dict.fromkeys(label for lines in series.values() for label, _, _ in lines))
    colors = {lab: COLORS.get(lab, matplotlib.colormaps["tab10"](i % 10)) for i, lab in enumerate(every)}
    shared = len(every) > 1 and all(len(lines) > 1 for lines in series.values())  # the lines are levels of series_key
    handles = {}
    for ax, (title, lines) in zip(axes.reshape(-1), series.items()):
        drawn = [ln for ln in lines if np.isfinite(ln[1]).any()]
        allv = np.concatenate([m[np.isfinite(m)] for _, m, _ in drawn]) if drawn else np.zeros(0)
        positive = bool(allv.size) and allv.min() >= 0
        log = positive and allv.min() > 0 and allv.max() > 10 * allv.min()
        floor = allv.min() / 3 if log else 0.0  # the bottom of a log axis: a band below it is cut there
        own = {lab: COLORS.get(lab, matplotlib.colormaps["tab10"](i % 10)) for i, (lab, _, _) in enumerate(lines)}
        for label, mean, sd in drawn:
            color = colors[label] if shared else own[label] if len(lines) > 1 else COLORS.get(label, "#222")
            (h,) = ax.plot(x, mean, "o-", ms=2.5, color=color, label=_plain(label))
            handles.setdefault(label, h)
            lo, hi = band(mean, sd, positive)
            ax.fill_between(x, np.maximum(lo, floor) if log else lo, hi, color=color, alpha=0.2, lw=0)
        if log:
            ax.set_yscale("log")
            ax.set_ylim(bottom=floor)
        if numeric:
            xp = x[x > 0]
            if xp.size == x.size and xp.max() > 100 * xp.min():
                ax.set_xscale("log")
        else:
            _categorical_ticks(ax, x, xs)
        missing = [label for label, _, _ in lines if label not in {ln[0] for ln in drawn}]
        if missing:
            ax.text(0.02, 0.98, "undefined: " + ", ".join(_plain(m) for m in missing), transform=ax.transAxes,
                    ha="left", va="top", fontsize=6, color="#555")  # fmt: skip
        ax.set(title=_plain(title), xlabel=_plain(xkey) if len(series) == 1 else "")
        if len(drawn) > 1 and not shared:
            ax.legend(loc="best", title=_plain(series_key) if series_key else None, title_fontsize=6.5)
    if len(series) > 1:
        fig.supxlabel(_plain(xkey), fontsize=STYLE["axes.labelsize"])
    if shared:
        fig.legend(
            [handles[lab] for lab in every if lab in handles],
            [_plain(lab) for lab in every if lab in handles],
            loc="outside upper center",
            ncol=min(len(handles), 6),
            title=_plain(series_key) if series_key else None,
            title_fontsize=6.5,
        )
    return figure_svg(fig, key, "line plots over " + xkey)


@styled
def regpath(panels: dict[str, tuple[list[float], dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]]], steps: int) -> str:
    """One panel per regulariser: lines (mean over seeds) with min–max bands against the strength,
    on log axes with strength 0 drawn a decade left of the smallest positive one (tick '0').

    `panels` maps a regulariser to (strengths, {label: (mean, low, high)})."""
    fig, axes = new_figure(1, len(panels), figsize=(WIDTH, 2.3), squeeze=False, layout="constrained")
    styles = [(COLORS["S1"], "-"), (COLORS["S2"], "--"), ("#222222", ":")]
    for ax, (name, (xs, lines)) in zip(axes[0], panels.items()):
        xs = np.asarray(xs, float)
        pos = xs[xs > 0]
        zero = pos.min() / 10 if pos.size else 1e-3
        x = np.where(xs > 0, xs, zero)
        for (label, (mean, lo, hi)), (color, ls) in zip(lines.items(), styles):
            ax.plot(x, mean, ls, marker="o", ms=2.5, color=color, label=_plain(label))
            ax.fill_between(x, lo, hi, color=color, alpha=0.18, lw=0)
        ax.set_xscale("log")
        if _log_ok([m for m, _, _ in lines.values()]):
            ax.set_yscale("log")
        ticks = sorted(set(x))
        ax.set_xticks(ticks, ["0" if t == zero and 0 in xs else f"{t:.3g}" for t in ticks])
        ax.minorticks_off()
        ax.set(title=_plain(name.replace("_", " ")), xlabel="strength")
    axes[0][0].set_ylabel("ratio")
    axes[0][-1].legend(loc="best", fontsize=6.5)
    return figure_svg(
        fig, "fig-regpath", "regularisation path " + ("at initialisation" if steps == 0 else f"after {steps} steps")
    )


@styled
def scaling(rows: list[dict], fits: dict, predicted: dict, quantities: list[str]) -> str:
    """Log–log panels, one per quantity: every (n, seed) value, the fitted line c·n^slope with the
    band of slopes inside its confidence interval (pivoted at the geometric mean of n), and the
    predicted slope through the same pivot (dashed). The slopes are in each panel's title and the
    symbols in one legend above the panels: no legend covers a band."""
    from matplotlib.ticker import NullFormatter

    ncols = min(3, len(quantities))
    nrows = -(-len(quantities) // ncols)
    fig, axes = new_figure(nrows, ncols, figsize=(WIDTH, 0.3 + 2.0 * nrows), squeeze=False, layout="constrained")
    for ax in axes.reshape(-1)[len(quantities) :]:
        ax.set_visible(False)
    n_all = np.array([float(r["n"]) for r in rows])
    grid = np.geomspace(n_all.min(), n_all.max(), 50) if n_all.size else np.array([1.0])
    for ax, q in zip(axes.reshape(-1), quantities):
        color = COLORS.get(q, "#222222")
        v = np.array([float(r.get(q, np.nan)) for r in rows])
        keep = np.isfinite(v) & (v > 0)
        ax.loglog(n_all[keep], v[keep], "o", ms=3, color=color, alpha=0.6, label="runs")
        f = fits.get(q)
        name = {"a_mu": "‖a∘μ‖", "zeta": "ζ"}.get(q, f"‖{q}‖")
        slopes = []
        if f:
            pivot = math.exp(float(np.mean(np.log(n_all[keep])))) if keep.any() else 1.0
            at = math.exp(f["intercept"]) * pivot ** f["slope"]
            ax.loglog(
                grid,
                math.exp(f["intercept"]) * grid ** f["slope"],
                "-",
                color=color,
                lw=1.2,
                label="fitted line (band: slopes in its CI)",
            )
            slopes.append(f"fit {f['slope']:+.3g} [{f['ci_low']:+.3g}, {f['ci_high']:+.3g}]")  # as the table: 3 digits
            lo, hi = at * (grid / pivot) ** f["ci_low"], at * (grid / pivot) ** f["ci_high"]
            ax.fill_between(grid, np.minimum(lo, hi), np.maximum(lo, hi), color=color, alpha=0.15, lw=0)
            p = predicted.get(q)
            if p is not None:
                ax.loglog(grid, at * (grid / pivot) ** p, "--", color="#222222", lw=1, label="predicted slope")
                slopes.append(f"predicted {p:+.3g}")
        ns = sorted(set(n_all))
        ax.set_xticks(ns, [f"{x:g}" for x in ns], minor=False)
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title("\n".join([name, *slopes]), fontsize=6.5)
        ax.set_xlabel("n")
    from matplotlib.lines import Line2D

    fig.legend(
        [
            Line2D([], [], ls="", marker="o", ms=3, color="#555"),
            Line2D([], [], color="#555"),
            Line2D([], [], ls="--", color="#222"),
        ],
        ["runs (n, seed)", "fitted line; band: slopes inside its CI", "predicted slope through the same point"],
        loc="outside upper center",
        ncol=3,
        fontsize=6.5,
    )
    return figure_svg(fig, "fig-scaling", "log-log scaling with fitted and predicted slopes")


@styled
def scatter(panels: list[tuple[str, str, np.ndarray, np.ndarray, np.ndarray | None]], ylabel: str, clabel: str = "") -> str:
    """Scatter panels sharing the y axis: (title, xlabel, x, y, colour values or None) each; colour
    by the values (e.g. the step size) with a shared colour bar labelled `clabel` (vector: the PDF keeps it)."""
    fig, axes = new_figure(1, len(panels), figsize=(WIDTH, 2.5), squeeze=False, sharey=True)
    fig.set_layout_engine("constrained")
    im = None
    for ax, (title, xlabel, x, y, c) in zip(axes[0], panels):
        kw = {"c": c, "cmap": "viridis"} if c is not None else {"color": COLORS["G"]}
        im = ax.scatter(x, y, s=12, alpha=0.85, linewidths=0, **kw) if c is not None else ax.scatter(x, y, s=12, **kw)
        ax.set(xlabel=_plain(xlabel), title=_plain(title))
    axes[0, 0].set_ylabel(_plain(ylabel))
    if im is not None and panels and panels[0][4] is not None:
        cb = fig.colorbar(im, ax=list(axes[0]), fraction=0.03, pad=0.02, label=_plain(clabel) or None)
        cb.solids.set_rasterized(False)  # vector quads: no embedded raster (WeasyPrint drops it)
        cb.solids.set_edgecolor("face")
    return figure_svg(fig, "fig-scatter", "scatter of " + ylabel)


# ---------------------------------------------------------------------------- across depth


def layer_labels(names: list[str], width: int = 28) -> tuple[str, list[str]]:
    """Tick labels for module names: the dotted prefix every name shares is dropped (and returned),
    and a name still longer than `width` keeps its last dotted parts whole ('…attention.self.query',
    never a cut word like '…ayer.0.attention')."""
    parts = [n.split(".") for n in names]
    common = 0
    while len(names) > 1 and all(len(p) > common + 1 for p in parts) and len({p[common] for p in parts}) == 1:
        common += 1
    out = []
    for p in parts:
        rest = p[common:]
        text = ".".join(rest)
        while len(text) > width and len(rest) > 1:
            rest = rest[1:]
            text = "…" + ".".join(rest)
        out.append(text if len(text) <= width + 1 else "…" + text[-width:])
    return ".".join(parts[0][:common]) + "." if common else "", out


@styled
def depth_profile(names: list[str], outliers: list[int], shares: dict[str, list[float]], align: dict[str, list]) -> str:
    """Per layer, in depth order: the outlier count, the shares of S1, S12, S2 and E in ‖G‖²_F, and
    |cos| of u_1 with the residue direction and with the input spike (and q with the propagated data spike)."""
    k = np.arange(len(names))
    fig, axes = new_figure(3, 1, figsize=(WIDTH, 5.6), sharex=True)
    axes[0].bar(k, outliers, color=COLORS["G"], width=0.7)
    axes[0].set(ylabel="outliers", title="outliers above the bulk edge (1 + margin) ‖E‖")
    from matplotlib.ticker import MaxNLocator

    axes[0].yaxis.set_major_locator(MaxNLocator(integer=True))  # a count: no 0.2, 0.4 ticks
    bottom = np.zeros(len(names))
    for key in ("S1", "S12", "S2", "E"):
        v = np.nan_to_num(np.asarray(shares[key], float))
        axes[1].bar(k, v, bottom=bottom, color=COLORS[key], width=0.7, label=key)
        bottom += v
    axes[1].set(ylabel="share of ‖G‖²_F", title="energy shares (cross terms make the sum differ from 1)")
    axes[1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    styles = {"residue": ("o-", COLORS["S1"], "|cos(u₁, H_Bᵀr)|"), "spike": ("s-", COLORS["S2"], "|cos(u₁, q)|")}
    styles["propagated"] = ("^:", "#555555", "|cos(q, propagated data spike)|")
    for key, (fmt, color, label) in styles.items():
        v = np.array([np.nan if x is None else x for x in align.get(key, [])], float)
        if v.size and np.isfinite(v).any():
            axes[2].plot(k, v, fmt, color=color, ms=3, label=label)
    axes[2].set(ylabel="|cos|", ylim=(0, 1.05), title="alignments")
    axes[2].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    prefix, short = layer_labels(names)
    axes[2].set_xticks(k, short, rotation=90, fontsize=5.5 if len(names) > 16 else 7)
    if prefix:
        axes[2].set_xlabel(f"layer (names after {_plain(prefix)})")
    fig.tight_layout()
    return figure_svg(fig, "fig-depth", "measures across depth")
