"""``python train.py model=adex dataset=mnist [key=value ...]`` in a checkout: the same as
``snn-train ...`` / ``python -m snn.train ...`` (:mod:`snn.train`, the run lifecycle in
:mod:`snn.training.run`)."""

from snn.train import main

if __name__ == "__main__":
    main()
