"""Report figures: matplotlib (imported lazily; Figure objects, no pyplot or GUI backend) drawn to
self-contained inline SVG strings.

Every function takes plain numbers (metrics.json, arrays.npz, CSV columns) and returns SVG
markup ready to inline in HTML: no XML prolog, ids prefixed so several figures can share one
document, no timestamps (the same run gives the same bytes).
"""

from __future__ import annotations

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


def _styled(fn):
    """Draw under the report style in an rc_context: matplotlib's global state is left as it was."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import matplotlib

        with matplotlib.rc_context(STYLE):
            return fn(*args, **kwargs)

    return wrapper


def _figure(nrows: int = 1, ncols: int = 1, *, figsize, **kw):
    """A figure without pyplot (no backend switch, nothing to close): (fig, axes)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **kw)


def _svg(fig, key: str, label: str) -> str:
    """The figure as inline SVG with every id prefixed by `key` (unique within a document)."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)
    text = re.sub(r'\bid="([^"]+)"', rf'id="{key}-\1"', text)
    text = re.sub(r'href="#([^"]+)"', rf'href="#{key}-\1"', text)
    text = re.sub(r"url\(#([^)]+)\)", rf"url(#{key}-\1)", text)
    return text.replace("<svg ", f'<svg role="img" aria-label="{_attr(label)}" ', 1)


def _attr(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")


def _term_lines(ax, norms: dict, keys=("S1", "S12", "S2", "E")) -> None:
    for k in keys:
        if k in norms and np.isfinite(norms[k]) and norms[k] > 0:
            ax.axvline(
                norms[k], color=COLORS[k], ls="--" if k == "E" else "-", lw=1.1, label=f"{TERM_LABELS[k]} = {norms[k]:.3g}"
            )


# ---------------------------------------------------------------------------- single run


@_styled
def spectrum(values: np.ndarray, e_values: np.ndarray | None, norms: dict, edge: float | None) -> str:
    """Figure 1: histogram of the singular values of G with the term norms marked, and the sorted spectrum."""
    s = np.sort(np.asarray(values, float))[::-1]
    s = s[s > s[0] * 1e-10] if s.size and s[0] > 0 else s
    fig, (ax, ax2) = _figure(1, 2, figsize=(WIDTH, 2.5), gridspec_kw={"width_ratios": [1.45, 1]})
    out = s > edge if edge is not None else np.zeros(s.size, bool)
    hi = max(s.max(initial=0), *(norms.get(k, 0) for k in ("S1", "S12", "S2", "E"))) * 1.06
    bins = np.linspace(0, hi or 1, 121)
    ax.stairs(np.histogram(s[~out], bins)[0], bins, fill=True, color="#9aa8b8", label="bulk")
    if out.any():
        ax.stairs(np.histogram(s[out], bins)[0], bins, fill=True, color=COLORS["G"], label=f"outliers ({int(out.sum())})")
        ax.plot(s[out], np.zeros(int(out.sum())), "v", color=COLORS["G"], ms=5, clip_on=False, transform=ax.get_xaxis_transform())
    _term_lines(ax, norms)
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
    fig.tight_layout()
    return _svg(fig, "fig-spectrum", "singular values of G")


@_styled
def term_norms(norms: dict, shares: dict) -> str:
    """Figure 2: operator norms of G and its four terms, and their shares of ‖G‖_F²."""
    keys = [k for k in ("G", "S1", "S12", "S2", "E", "reg") if k in norms]
    fig, (ax, ax2) = _figure(1, 2, figsize=(WIDTH, 2.1), gridspec_kw={"width_ratios": [1.3, 1]})
    vals = [norms[k] for k in keys]
    bars = ax.bar([TERM_LABELS[k] for k in keys], vals, color=[COLORS[k] for k in keys], width=0.65)
    ax.bar_label(bars, fmt="%.3g", fontsize=7, padding=1.5)
    ax.set(ylabel="operator norm", title="term norms", ylim=(0, max(vals, default=1) * 1.18 or 1))
    sk = [k for k in ("S1", "S12", "S2", "E") if k in shares]
    bars = ax2.barh([f"{k}" for k in sk][::-1], [shares[k] for k in sk][::-1], color=[COLORS[k] for k in sk][::-1], height=0.6)
    ax2.bar_label(bars, fmt="%.2f", fontsize=7, padding=1.5)
    ax2.set(xlabel="share of ‖G‖²_F", title="energy shares", xlim=(0, max(1.0, max((shares[k] for k in sk), default=0) * 1.15)))
    fig.tight_layout()
    return _svg(fig, "fig-norms", "term norms")


@_styled
def alignment(align: dict, n_outliers: int) -> str:
    """Figure 3: |cos| of the top-k singular vectors against the predicted directions, as heatmaps."""
    left = [(lab, align[key]) for key, lab in (("residue", "X_Bᵀr"), ("spike", "q")) if key in align]
    right = [(lab, align[key]) for key, lab in (("right_mu", "a∘μ"), ("right_spike", "a∘(Σ′⊥ᵀ(z∘r))")) if key in align]
    k = max((len(v) for _, v in left + right), default=0)
    fig, axes = _figure(1, 2, figsize=(WIDTH * 0.72, 0.55 + 0.23 * k))
    for ax, cols, title in ((axes[0], left, "left vectors u_k"), (axes[1], right, "right vectors v_k")):
        M = np.array([np.pad(np.asarray(v, float), (0, k - len(v)), constant_values=np.nan) for _, v in cols]).T.reshape(
            k, len(cols)
        )
        _mesh(ax, M, cmap="Blues", vmin=0, vmax=1)
        ax.invert_yaxis()
        for (i, j), v in np.ndenumerate(M):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6.5, color="white" if v > 0.6 else "#222")
        ax.set_xticks(range(len(cols)), [c for c, _ in cols])
        ax.set_yticks(range(k), [f"k={i + 1}" + (" ●" if i < n_outliers else "") for i in range(k)])
        ax.tick_params(length=0)
        ax.set_title(title)
        ax.spines[:].set_visible(False)
    fig.tight_layout()
    return _svg(fig, "fig-align", "alignment heatmap")


@_styled
def data_diagnostics(eigenvalues: np.ndarray, alpha: float | None, zeta: float | None, n: int | None) -> str:
    """Figure 4: bulk eigenvalues on log-log axes with the power law k^-alpha, and the spike variance zeta²."""
    lam = np.sort(np.asarray(eigenvalues, float))[::-1]
    lam = lam[lam > lam[0] * 1e-12] if lam.size and lam[0] > 0 else lam
    k = np.arange(1, lam.size + 1)
    fig, ax = _figure(figsize=(WIDTH * 0.6, 2.3))
    ax.loglog(k, lam, color=COLORS["E"], lw=2, label="bulk eigenvalues λ_k")
    if alpha is not None and np.isfinite(alpha) and lam.size:
        fit = k[: max(3, int(0.9 * k.size))]
        c = float(np.mean(np.log(lam[: fit.size]) + alpha * np.log(fit)))  # intercept of log λ = c - α log k
        ax.loglog(fit, np.exp(c) * fit**-alpha, color=COLORS["S1"], lw=0.9, ls="--", label=f"fit k^(−α), α = {alpha:.3g}")
    if zeta is not None and zeta > 0:
        nu = f", ν = {math.log(zeta) / math.log(n):.3g}" if n and n > 1 else ""
        ax.axhline(zeta**2, color=COLORS["S2"], lw=1.1, label=f"spike ζ² = {zeta**2:.3g} (ζ = {zeta:.3g}{nu})")
    ax.set(xlabel="k", ylabel="eigenvalue", title="data: bulk spectrum and spike strength")
    ax.legend(loc="best")
    fig.tight_layout()
    return _svg(fig, "fig-data", "bulk spectrum and spike strength")


# ---------------------------------------------------------------------------- training


@_styled
def trajectory(cols: dict[str, np.ndarray]) -> str | None:
    """Figure 5: loss, term norms, top singular values, outliers/stable rank, alignments on one step axis."""
    if "step" not in cols:
        return None
    panels = []
    if loss := [c for c in ("train_loss", "test_loss") if c in cols]:
        panels.append(("loss", loss, True))
    if terms := [c for c in ("G", "S1", "S12", "S2", "E") if c in cols]:
        panels.append(("term norms", terms, True))
    if sk := sorted((c for c in cols if re.fullmatch(r"s\d+", c)), key=lambda c: int(c[1:])):
        panels.append(("top singular values", sk, True))
    if rank := [c for c in ("outliers", "stable_rank") if c in cols]:
        panels.append(("rank", rank, False))
    if al := [c for c in cols if c.startswith("align_")]:
        panels.append(("|cos| alignments", al, False))
    if "drift" in cols:
        panels.append(("‖W − W₀‖", ["drift"], False))
    if not panels:
        return None
    fig, axes = _figure(len(panels), 1, figsize=(WIDTH, 0.4 + 1.25 * len(panels)), sharex=True, squeeze=False)
    step = cols["step"]
    o = cols.get("outliers")
    jumps = [] if o is None else [step[i] for i in range(1, o.size) if o[i] != o[i - 1] and np.isfinite(o[i - 1 : i + 1]).all()]
    for ax, (title, names, logy) in zip(axes[:, 0], panels):
        for x in jumps[:8]:  # where the outlier count changes
            ax.axvline(x, color="#a33", lw=0.7, ls=":")
        for name in names:
            y = cols[name]
            color = COLORS.get(name, "#555" if name == "outliers" else None)
            if re.fullmatch(r"s\d+", name):
                color, lw = ("#222" if name == "s1" else "#9aa4b0"), (1.1 if name == "s1" else 0.7)
            else:
                lw = 1.2
            ls = "--" if name in ("E", "test_loss") else "-"
            draw = ax.step if name == "outliers" else ax.plot
            draw(
                step,
                y,
                color=color,
                lw=lw,
                ls=ls,
                label=_plain(name) if not re.fullmatch(r"s\d+", name) or name in ("s1", "s2") else None,
                **({"where": "post"} if name == "outliers" else {}),
            )
        if logy and all(np.nanmin(cols[c]) > 0 for c in names if np.isfinite(cols[c]).any()):
            ax.set_yscale("log")
        ax.set_ylabel(title)
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5))
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    return _svg(fig, "fig-train", "training trajectory")


# ---------------------------------------------------------------------------- sweeps


def _plain(text) -> str:
    """A user string drawn literally (a '$' would start matplotlib mathtext)."""
    return str(text).replace("$", r"\$")


def _ticks(values) -> list[str]:
    return [f"{v:.3g}" if isinstance(v, float) else _plain(v) for v in values]


@_styled
def regime_map(xkey: str, xs: list, ykey: str | None, ys: list, regimes: list[list[str | None]]) -> str:
    """Regime (most frequent over seeds) on the grid of two swept keys (ykey None: one row)."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    names = list(REGIME_COLORS)
    M = np.array([[names.index(r) if r in names else np.nan for r in row] for row in regimes], float)
    fig, ax = _figure(figsize=(min(WIDTH, 3.2 + 0.5 * len(xs)), 1.0 + 0.32 * len(ys)))
    _mesh(ax, M, cmap=ListedColormap(list(REGIME_COLORS.values())), vmin=-0.5, vmax=len(names) - 0.5)
    _grid_axes(ax, xkey, xs, ykey, ys)
    present = [n for n in names if n in {r for row in regimes for r in row}]
    ax.legend(handles=[Patch(color=REGIME_COLORS[n], label=n) for n in present], loc="center left", bbox_to_anchor=(1.02, 0.5))
    ax.set_title("regime")
    fig.tight_layout()
    return _svg(fig, "fig-regime", "regime map")


@_styled
def ratio_map(xkey: str, xs: list, ykey: str | None, ys: list, ratio: np.ndarray) -> str:
    """‖S2‖/‖S1‖ (mean over seeds) on the grid of two swept keys, log colour scale when it spans a decade."""
    from matplotlib.colors import LogNorm

    R = np.asarray(ratio, float)
    pos = R[np.isfinite(R) & (R > 0)]
    norm = LogNorm(pos.min(), pos.max()) if pos.size and pos.max() > 10 * pos.min() else None
    fig, ax = _figure(figsize=(min(WIDTH, 2.4 + 0.5 * len(xs)), 1.0 + 0.32 * len(ys)))
    im = _mesh(ax, R, cmap="viridis", norm=norm)
    if R.size <= 150:
        for (i, j), v in np.ndenumerate(R):
            if np.isfinite(v):
                r, g, b, _ = im.cmap(im.norm(v))
                ax.text(
                    j,
                    i,
                    f"{v:.2g}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="#222" if 0.299 * r + 0.587 * g + 0.114 * b > 0.55 else "white",
                )
    _grid_axes(ax, xkey, xs, ykey, ys)
    fig.colorbar(im, ax=ax, fraction=0.05, pad=0.02)
    ax.set_title("‖S2‖ / ‖S1‖ (mean over seeds)")
    fig.tight_layout()
    return _svg(fig, "fig-ratio", "S2 to S1 ratio map")


def _mesh(ax, M: np.ndarray, **kw):
    """A heatmap of cells centred on integer coordinates, drawn as vector quads (no embedded raster image)."""
    rows, cols = M.shape
    return ax.pcolormesh(
        np.arange(cols + 1) - 0.5, np.arange(rows + 1) - 0.5, np.ma.masked_invalid(M), edgecolors="white", linewidth=0.5, **kw
    )


def _grid_axes(ax, xkey, xs, ykey, ys) -> None:
    ax.set_xticks(range(len(xs)), _ticks(xs), rotation=45 if len(xs) > 8 else 0)
    ax.set_xlabel(_plain(xkey))
    ax.set_yticks(range(len(ys)), _ticks(ys) if ykey else [""])
    ax.set_ylabel(_plain(ykey or ""))
    ax.tick_params(length=0)
    ax.spines[:].set_visible(False)


@_styled
def seed_bands(xkey: str, xs: list, series: dict[str, list[tuple[str, np.ndarray, np.ndarray]]]) -> str:
    """Line plots over one swept key: per panel, lines (mean over seeds) with mean ± sd bands.

    `series` maps a panel title to [(label, mean, sd)], arrays aligned with xs."""
    import matplotlib

    numeric = all(isinstance(v, (int, float)) for v in xs)
    x = np.asarray(xs, float) if numeric else np.arange(len(xs))
    fig, axes = _figure(1, len(series), figsize=(WIDTH, 2.2), squeeze=False)
    for ax, (title, lines) in zip(axes[0], series.items()):
        for i, (label, mean, sd) in enumerate(lines):
            color = COLORS.get(label, matplotlib.colormaps["tab10"](i % 10) if len(lines) > 1 else "#222")
            ax.plot(x, mean, "o-", ms=2.5, color=color, label=_plain(label))
            ax.fill_between(x, mean - sd, mean + sd, color=color, alpha=0.2, lw=0)
        if not numeric:
            ax.set_xticks(x, _ticks(xs))
        ax.set(xlabel=_plain(xkey), title=title)
        if len(lines) > 1:
            ax.legend(loc="best")
    fig.tight_layout()
    return _svg(fig, "fig-lines", "line plots over " + xkey)


# ---------------------------------------------------------------------------- across depth


@_styled
def depth_profile(names: list[str], outliers: list[int], shares: dict[str, list[float]], align: dict[str, list]) -> str:
    """Per layer, in depth order: the outlier count, the shares of S1, S12, S2 and E in ‖G‖²_F, and
    |cos| of u_1 with the residue direction and with the input spike (and q with the propagated data spike)."""
    k = np.arange(len(names))
    fig, axes = _figure(3, 1, figsize=(WIDTH, 5.6), sharex=True)
    axes[0].bar(k, outliers, color=COLORS["G"], width=0.7)
    axes[0].set(ylabel="outliers", title="outliers above the bulk edge (1 + margin) ‖E‖")
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
    short = [n if len(n) <= 28 else "…" + n[-27:] for n in names]
    axes[2].set_xticks(k, short, rotation=90, fontsize=5.5 if len(names) > 16 else 7)
    fig.tight_layout()
    return _svg(fig, "fig-depth", "measures across depth")
