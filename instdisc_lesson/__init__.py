"""instdisc_lesson: the helper package of the Instance Discrimination course.

Each module is one idea, taught in the notebook named in its docstring:

    config        the budget (quick/gpu/paper), device, seeding, paths (notebook 00)
    data          datasets that return (image, label, index)         (notebook 00)
    augment       batched, per-sample augmentation                   (notebook 00)
    models        ConvNet and ResNet-18-CIFAR with an L2-normed head (notebooks 00-01)
    parametric    parametric instance softmax, eq. 1                 (notebook 01)
    nonparametric non-parametric softmax, eq. 2                      (notebooks 01-02)
    memory_bank   the memory bank and its momentum update            (notebook 02)
    nce           NCE and the Monte-Carlo estimate of Z, eqs. 4-7    (notebook 03)
    proximal      proximal regularisation, eqs. 8-9                  (notebook 04)
    knn           weighted kNN, probe, retrieval, baselines          (notebook 05)
    trainer       one loop for every objective; checkpoints          (notebook 06)
    cli           python -m instdisc_lesson train ...                (notebook 06)
    pic           parametric instance classification (PIC)          (notebook 07)
    distributed   the trainer under torchrun: one bank on N processes (notebook 08)

Importing the package loads only torch; scikit-learn, matplotlib and umap load when first used.
"""
from .config import budget, dataset_name, describe_setup, get_device, is_quick, is_smoke, pick, seed_everything
from .data import course_data

__version__ = "0.1.0"
__all__ = ["budget", "course_data", "dataset_name", "describe_setup", "get_device", "is_quick", "is_smoke", "pick", "seed_everything"]
