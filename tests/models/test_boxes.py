import numpy as np
import torch

from steelseg_hpc.models.boxes import mask_to_boxes


def test_one_box_per_connected_component_of_every_class():
    mask = np.zeros((10, 12), dtype=np.uint8)
    mask[1:3, 1:4] = 1  # component A of class 1
    mask[6:9, 8:11] = 1  # component B of class 1
    mask[5, 0] = 2  # a single pixel of class 2
    boxes, classes = mask_to_boxes(torch.from_numpy(mask))
    pairs = sorted(zip(classes.tolist(), boxes.tolist()))
    assert pairs == [
        (0, [0.0, 0.0, 12.0, 10.0]),
        (1, [1.0, 1.0, 4.0, 3.0]),
        (1, [8.0, 6.0, 11.0, 9.0]),
        (2, [0.0, 5.0, 1.0, 6.0]),
    ]
    assert boxes.dtype == torch.float32 and classes.dtype == torch.int64


def test_diagonal_pixels_are_one_component_and_min_area_filters():
    mask = np.zeros((5, 5), dtype=np.uint8)
    mask[1, 1] = mask[2, 2] = 1
    mask[4, 4] = 1
    boxes, classes = mask_to_boxes(mask, classes=[1])
    assert boxes.tolist() == [[1.0, 1.0, 3.0, 3.0], [4.0, 4.0, 5.0, 5.0]]
    boxes, _ = mask_to_boxes(mask, classes=[1], min_area=2)
    assert boxes.tolist() == [[1.0, 1.0, 3.0, 3.0]]


def test_empty_result_has_the_right_shape():
    boxes, classes = mask_to_boxes(np.zeros((4, 4), np.uint8), classes=[3])
    assert boxes.shape == (0, 4) and classes.shape == (0,)
