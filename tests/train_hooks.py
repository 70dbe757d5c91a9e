"""Test helpers that reach into train.py's Trainer."""

from __future__ import annotations

import lightning as L

import train as train_script


def with_callback(monkeypatch, callback: L.Callback) -> None:
    """Makes train.train() add ``callback`` to the Trainer it builds."""
    build = train_script.build

    def build_with_callback(cfg):
        module, datamodule, trainer = build(cfg)
        trainer.callbacks.append(callback)
        return module, datamodule, trainer

    monkeypatch.setattr(train_script, "build", build_with_callback)
