"""GPU choice (`--gpu`): NVML devices mapped to this process's CUDA ordering, most free memory wins."""

from __future__ import annotations

import pytest

from llmhost.engines.gpu import GpuDevice, choose_gpus, nvml_devices, visible_gpus

GiB = 2**30
# NVML order (PCI bus order) of a 4-GPU machine: GPU 2 has the most free memory, GPU 3 the least.
DEVICES = [
    GpuDevice(0, "GPU-aaaa0000-0000", "H100", 80 * GiB, 30 * GiB),
    GpuDevice(1, "GPU-bbbb1111-1111", "H100", 80 * GiB, 50 * GiB),
    GpuDevice(2, "GPU-cccc2222-2222", "H100", 80 * GiB, 70 * GiB),
    GpuDevice(3, "GPU-dddd3333-3333", "H100", 80 * GiB, 10 * GiB),
]


def nvml_of(choice) -> list[int]:
    return [g.device.nvml_index for g in choice.gpus]


def test_unset_cuda_visible_devices_keeps_nvml_order():
    assert [(v.cuda_index, v.device.nvml_index) for v in visible_gpus(DEVICES, None)] == [
        (0, 0),
        (1, 1),
        (2, 2),
        (3, 3),
    ]


def test_cuda_visible_devices_indices_are_remapped():
    # CUDA_VISIBLE_DEVICES=3,1: cuda:0 is NVML GPU 3 and cuda:1 is NVML GPU 1.
    visible = visible_gpus(DEVICES, "3,1")
    assert [(v.cuda_index, v.device.nvml_index) for v in visible] == [(0, 3), (1, 1)]


def test_cuda_visible_devices_uuids_and_prefixes():
    visible = visible_gpus(DEVICES, "GPU-cccc2222-2222, GPU-aaaa")
    assert [(v.cuda_index, v.device.nvml_index) for v in visible] == [(0, 2), (1, 0)]


def test_cuda_visible_devices_stops_at_the_first_unknown_entry_like_cuda():
    assert [v.device.nvml_index for v in visible_gpus(DEVICES, "2,7,0")] == [2]
    assert visible_gpus(DEVICES, "") == []
    assert visible_gpus(DEVICES, "-1") == []
    assert visible_gpus(DEVICES, "GPU-") == []  # an ambiguous prefix names no single device
    assert [v.device.nvml_index for v in visible_gpus(DEVICES, "1,1,2")] == [1]  # duplicates end it too


def test_auto_picks_most_free_memory_and_reports_cuda_indices():
    choice = choose_gpus("auto", devices=DEVICES, env={})
    assert nvml_of(choice) == [2] and choice.cuda_indices == [2]
    assert choice.cuda_visible_devices == "GPU-cccc2222-2222"
    two = choose_gpus("auto", count=2, devices=DEVICES, env={})
    assert nvml_of(two) == [1, 2] and two.cuda_indices == [1, 2]


def test_auto_under_cuda_visible_devices_returns_this_process_indices():
    # Only NVML GPUs 3, 0 and 1 are visible, as cuda:0, cuda:1, cuda:2; NVML GPU 1 has the most free.
    choice = choose_gpus("auto", devices=DEVICES, env={"CUDA_VISIBLE_DEVICES": "3,0,1"})
    assert nvml_of(choice) == [1] and choice.cuda_indices == [2]
    assert choice.cuda_visible_devices == "GPU-bbbb1111-1111"  # pins a child to the same physical GPU
    pair = choose_gpus("auto", count=2, devices=DEVICES, env={"CUDA_VISIBLE_DEVICES": "3,0,1"})
    assert nvml_of(pair) == [0, 1] and pair.cuda_indices == [1, 2]


def test_auto_falls_back_to_cpu():
    assert choose_gpus("auto", devices=[], env={}).cuda_indices == []
    assert "no GPU" in choose_gpus("auto", devices=[], env={}).reason
    assert choose_gpus("auto", devices=DEVICES, env={"CUDA_VISIBLE_DEVICES": ""}).cuda_indices == []
    assert choose_gpus("auto", count=3, devices=DEVICES, env={"CUDA_VISIBLE_DEVICES": "0,1"}).gpus == ()
    needy = choose_gpus("auto", devices=DEVICES, env={}, min_free_bytes=75 * GiB)
    assert needy.gpus == () and "enough free memory" in needy.reason
    assert nvml_of(choose_gpus("auto", count=2, devices=DEVICES, env={}, min_free_bytes=40 * GiB)) == [1, 2]


def test_none_means_cpu_without_asking_nvml(monkeypatch):
    def unreachable():
        raise AssertionError("--gpu none must not read NVML")

    monkeypatch.setattr("llmhost.engines.gpu.nvml_devices", unreachable)
    assert choose_gpus("none").gpus == ()
    assert choose_gpus("cpu").cuda_indices == []


def test_explicit_indices_are_cuda_indices():
    choice = choose_gpus("0,2", devices=DEVICES, env={"CUDA_VISIBLE_DEVICES": "3,2,1"})
    assert choice.cuda_indices == [0, 2] and nvml_of(choice) == [3, 1]
    assert choice.cuda_visible_devices == "GPU-dddd3333-3333,GPU-bbbb1111-1111"


def test_explicit_indices_that_do_not_exist_are_refused_clearly():
    with pytest.raises(ValueError, match="no visible GPU with index 3.*CUDA_VISIBLE_DEVICES=0,1"):
        choose_gpus("1,3", devices=DEVICES, env={"CUDA_VISIBLE_DEVICES": "0,1"})
    with pytest.raises(ValueError, match="listed twice"):
        choose_gpus("1,1", devices=DEVICES, env={})
    with pytest.raises(ValueError, match="auto, none or comma-separated"):
        choose_gpus("first", devices=DEVICES, env={})


def test_real_nvml_read_never_raises():
    """On this machine there may be no driver or no nvidia-ml-py: the answer is then simply no GPU."""
    devices = nvml_devices()
    assert all(d.total_bytes >= d.free_bytes >= 0 for d in devices)
