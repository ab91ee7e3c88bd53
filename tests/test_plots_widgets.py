"""Figures and slider glue: each returns what the notebooks expect, with labelled axes; sliders redraw."""
import matplotlib

matplotlib.use("Agg")

import torch  # noqa: E402

from conftest import make_dataset  # noqa: E402
from instdisc_lesson import plots, widgets  # noqa: E402
from instdisc_lesson.sweeps import grid_runs  # noqa: E402
from instdisc_lesson.recipe import quick_config  # noqa: E402


def test_figures_are_labelled():
    ds = make_dataset(40)
    history = [{"epoch": 1, "loss": 2.0, "knn_top1": 0.5}, {"epoch": 2, "loss": 1.5, "knn_top1": 0.6}]
    figures = [
        plots.show_classes(ds, per_class=3),
        plots.plot_history({"run": history}, baselines={"random init": 0.4}),
        plots.plot_embeddings({"a": torch.rand(40, 2).numpy()}, ds.labels.numpy(), ds.classes),
        plots.retrieval_grid(ds.images[:2], ds.labels[:2], ds.images[:6].view(2, 3, 3, 32, 32), ds.labels[:6].view(2, 3), ds.classes),
        plots.bar_table({"x": 0.5, "y": 0.7}, reference={"x": 60.0}),
    ]
    for fig in figures:
        assert fig.axes
    curves = figures[1].axes
    assert curves[0].get_xlabel() == "epoch" and "kNN" in curves[1].get_ylabel()
    assert [t.get_text() for t in figures[4].axes[0].get_xticklabels()] == ["x", "y"]


def test_slider_redraws_with_new_value():
    seen = []
    box = widgets.interactive_plot(lambda tau: seen.append(tau), tau=widgets.float_slider(0.1, -2, 0, 0.1, "tau", log=True))
    slider = box.children[0].children[0]
    assert seen == [0.1]
    slider.value = 0.5
    assert seen[-1] == 0.5


def test_grid_runs_cover_the_grid():
    ds = make_dataset(48)
    grid = grid_runs(quick_config(objective="nce", epochs=1, batch_size=16, knn_k=5), ds, None, tau=[0.1, 0.2], nce_m=[4])
    assert sorted(grid) == [(0.1, 4), (0.2, 4)]
    assert all(len(r["loss"]) == 3 for r in grid.values())  # 48 images / batch 16 = 3 steps


def test_budget_plot_marks_each_runs_lr_drops_at_its_own_epochs():
    def run(epochs, every):
        history = [{"epoch": e, "loss": 10.0 / e, **({"knn_top1": 0.4 + e / 1000} if e % every == 0 else {})}
                   for e in range(1, epochs + 1)]
        return {"history": history, "config": {"epochs": epochs, "lr_milestones": [0.6, 0.8]},
                "random_init_knn_top1": 0.40, "raw_pixel_knn_top1": 0.41}

    # the paper's schedule: x0.1 after epochs 120 and 160 of 200; a 10-epoch run after 6 and 8
    assert plots.lr_drops(run(200, 10)) == [120, 160] and plots.lr_drops(run(10, 2)) == [6, 8]
    fig = plots.plot_budget({"10 epochs": run(10, 2), "200 epochs": run(200, 10)})
    loss_ax, knn_ax = fig.axes
    assert knn_ax.get_xscale() == "log" and "kNN" in knn_ax.get_ylabel()
    curves = [line for line in knn_ax.get_lines() if line.get_marker() == "o"]
    assert [len(line.get_xdata()) for line in curves] == [5, 20]            # every evaluated epoch, no other
    assert abs(curves[1].get_ydata()[-1] - 60.0) < 1e-9                        # kNN at epoch 200, in percent
    marks = [list(line.get_xdata()) for line in knn_ax.get_lines() if line.get_marker() == "^" and len(line.get_xdata())]
    assert marks == [[6, 8], [120, 160]]


def test_bar_table_puts_each_series_value_on_its_own_bar():
    """Table 1's figure: two measured series and the paper's, a missing value drawn as no bar and no label."""
    fig = plots.bar_table({"a": 0.5, "b": 0.7}, reference={"a": 80.0, "b": 60.0}, label="10 epochs",
                          more=("200 epochs", {"a": 0.66}))
    ax = fig.axes[0]
    heights = {c.get_label(): [round(p.get_height(), 6) for p in c.patches] for c in ax.containers}
    assert heights["10 epochs"] == [50.0, 70.0] and heights["paper (CIFAR-10, ResNet-18, 200 epochs)"] == [80.0, 60.0]
    assert heights["200 epochs"][0] == 66.0 and heights["200 epochs"][1] != heights["200 epochs"][1]   # b: NaN, no bar
    labels = [t.get_text() for t in ax.texts]
    assert labels.count("") == 1 and "66.0" in labels and "nan" not in labels
    # bars of one row sit side by side, in the order given: 10 epochs, 200 epochs, paper
    xs = [ax.containers[i].patches[0].get_x() for i in range(3)]
    assert xs == sorted(xs) and len(set(xs)) == 3


def test_the_trainer_and_the_figures_drop_the_lr_at_the_same_epochs():
    """One rule (recipe.lr_drops): the trainer's scheduler and the figures' triangles, for any schedule."""
    from instdisc_lesson.recipe import lr_drops
    from instdisc_lesson.trainer import Trainer

    cfg = quick_config(epochs=7, lr_milestones=(0.3, 0.9), batch_size=16, knn_k=5)
    trainer = Trainer(cfg, make_dataset(32), None, progress=False)
    assert sorted(trainer.scheduler.milestones) == plots.lr_drops({"config": cfg.to_dict()}) == lr_drops(7, (0.3, 0.9)) \
        == [2, 6]


def test_records_and_reports_draw_the_same_baselines():
    """One helper draws a run's baselines: dashed grey lines named with their values, wherever they appear."""
    fig, ax = matplotlib.pyplot.subplots()
    plots.draw_baselines(ax, {"random_init_knn_top1": 0.25, "raw_pixel_knn_top1": 0.305})
    assert [line.get_label() for line in ax.get_lines()] == ["untrained network 25.0", "raw pixels 30.5"]
    assert {line.get_color() for line in ax.get_lines()} == {"gray"}
