"""Slider wiring for the notebooks: thin ``ipywidgets`` glue around plain, tested package functions.

Each ``*_widget`` function takes precomputed data, draws with inline matplotlib, and returns the
widget box. Only core ipywidgets are used (no ipympl), so they work in JupyterLab and Colab.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import ipywidgets as W
from IPython.display import display


def interactive_plot(draw, **sliders):
    """``draw(**values)`` makes a figure; every slider move redraws it in one Output area."""
    out = W.Output()

    def redraw(**values):
        with out:
            out.clear_output(wait=True)
            draw(**values)
            plt.show()

    controls = W.interactive(redraw, **sliders)  # draws once now, then on every slider change
    return W.VBox([W.HBox(list(controls.children[:-1])), out])


def float_slider(value, lo, hi, step, description, log=False):
    if log:
        return W.FloatLogSlider(value=value, base=10, min=lo, max=hi, step=step, description=description, continuous_update=False)
    return W.FloatSlider(value=value, min=lo, max=hi, step=step, description=description, continuous_update=False)


def options_slider(options, value, description):
    return W.SelectionSlider(options=list(options), value=value, description=description, continuous_update=False)


def show(box):
    display(box)
