"""Figures without pyplot: no matplotlib backend is switched (a notebook keeps its inline plots
after a report is written) and no global figure state needs closing."""

from matplotlib.figure import Figure


def subplots(nrows: int = 1, ncols: int = 1, *, figsize, **kwargs):
    """Like `pyplot.subplots`: -> (figure, axes); save with `figure.savefig(path)`."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **kwargs)
