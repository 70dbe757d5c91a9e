"""SpikingClassifierModule's steps: what a batch that does not fit the model reports."""

import pytest

from snn.training.run import run as train
from tests.helpers import make_cfg


def test_data_of_another_shape_than_the_model_is_named_with_both_shapes(tmp_path):
    cfg = make_cfg(tmp_path, "dataset=synthetic", "model.conv=null", "model.input_shape=[1,9,9]", "debug=fdr")
    with pytest.raises(ValueError) as error:
        train(cfg)
    assert type(error.value).__name__ == "ConfigError"  # printed by train.py without a traceback
    message = str(error.value)
    assert "samples have shape [1, 8, 8]" in message and "input_shape [1, 9, 9]" in message
    assert "model.input_shape" in message
