"""Which GPU(s) to use: `--gpu auto|none|0,2`.

`auto` reads the free memory of every GPU through NVML (`nvidia-ml-py`, imported only here and only
when asked; absent or failing means no GPU) and picks the ones with the most free memory. NVML numbers
GPUs in PCI bus order over the whole machine, while CUDA inside this process numbers only the GPUs
that `CUDA_VISIBLE_DEVICES` lists, in the order it lists them (by index or by UUID). So every NVML
device is mapped to its CUDA index here, and indices given with `--gpu 0,2` are CUDA indices, the
numbers torch and `nvidia-smi`-aware tools inside this environment use (as vLLM and Xinference do).
With CUDA_VISIBLE_DEVICES unset, CUDA's own order is assumed to be NVML's (PCI bus) order, which holds
for identical GPUs or with CUDA_DEVICE_ORDER=PCI_BUS_ID; mixed GPU models need that variable set.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

log = logging.getLogger("llmhost.gpu")


@dataclass(frozen=True)
class GpuDevice:
    """One GPU as NVML reports it."""

    nvml_index: int
    uuid: str  # "GPU-8f2c…"
    name: str
    total_bytes: int
    free_bytes: int


@dataclass(frozen=True)
class VisibleGpu:
    """A GPU this process may use, with its CUDA index (its place in CUDA_VISIBLE_DEVICES)."""

    cuda_index: int
    device: GpuDevice


@dataclass(frozen=True)
class GpuChoice:
    gpus: tuple[VisibleGpu, ...] = ()
    reason: str = ""
    candidates: tuple[VisibleGpu, ...] = field(default=(), repr=False)

    @property
    def cuda_indices(self) -> list[int]:
        """Device numbers for torch in this process (`cuda:N`). Empty: run on the CPU."""
        return [g.cuda_index for g in self.gpus]

    @property
    def cuda_visible_devices(self) -> str:
        """The value that pins a child process to exactly these GPUs (UUIDs survive any re-ordering)."""
        return ",".join(g.device.uuid for g in self.gpus)


def nvml_devices() -> list[GpuDevice]:
    """Every GPU NVML sees on this machine; empty when nvidia-ml-py or the driver is missing."""
    try:
        import pynvml
    except ImportError:
        log.debug("nvidia-ml-py is not installed: no GPU")
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        log.debug("NVML is not usable (%s): no GPU", exc)
        return []
    try:
        devices = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            devices.append(
                GpuDevice(
                    nvml_index=i,
                    uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
                    name=_text(pynvml.nvmlDeviceGetName(handle)),
                    total_bytes=int(memory.total),
                    free_bytes=int(memory.free),
                )
            )
        return devices
    except pynvml.NVMLError as exc:
        log.warning("NVML failed while listing GPUs (%s): no GPU", exc)
        return []
    finally:
        pynvml.nvmlShutdown()


def visible_gpus(devices: Sequence[GpuDevice], cuda_visible_devices: str | None) -> list[VisibleGpu]:
    """Map NVML devices to this process's CUDA indices under CUDA_VISIBLE_DEVICES.

    Unset: every device, in NVML order. Set: the listed entries in their order, each an NVML index or
    a (prefix of a) UUID; as in the CUDA runtime, the list ends at the first entry that names no
    device, and an empty value hides every GPU. MIG entries are not resolved and end the list too.
    """
    if cuda_visible_devices is None:
        return [VisibleGpu(i, d) for i, d in enumerate(devices)]
    visible: list[VisibleGpu] = []
    for entry in (e.strip() for e in cuda_visible_devices.split(",")):
        device = _lookup(devices, entry)
        if device is None or any(v.device is device for v in visible):
            break
        visible.append(VisibleGpu(len(visible), device))
    return visible


def _lookup(devices: Sequence[GpuDevice], entry: str) -> GpuDevice | None:
    if entry.isdigit():
        return next((d for d in devices if d.nvml_index == int(entry)), None)
    if entry.startswith("GPU-") and len(entry) > 4:
        matches = [d for d in devices if d.uuid.startswith(entry)]
        return matches[0] if len(matches) == 1 else None
    return None


def choose_gpus(
    spec: str,
    count: int = 1,
    *,
    devices: Sequence[GpuDevice] | None = None,
    env: Mapping[str, str] | None = None,
    min_free_bytes: int = 0,
) -> GpuChoice:
    """Resolve `--gpu` for an engine that needs `count` GPUs.

    `none`: the CPU. `auto`: the `count` visible GPUs with the most free memory (each with at least
    `min_free_bytes` free), or the CPU when there are not enough. `0,2`: exactly those CUDA indices
    (a ValueError names the ones that do not exist). `devices` and `env` are injectable for tests.
    """
    spec = spec.strip().lower()
    if spec in ("none", "cpu", ""):
        return GpuChoice(reason="--gpu none")
    environ = os.environ if env is None else env
    candidates = visible_gpus(
        nvml_devices() if devices is None else devices, environ.get("CUDA_VISIBLE_DEVICES")
    )
    if spec == "auto":
        usable = [g for g in candidates if g.device.free_bytes >= min_free_bytes]
        if len(usable) < count:
            why = (
                "no GPU is visible"
                if not candidates
                else f"{len(usable)} visible GPU(s) have enough free memory"
            )
            return GpuChoice(reason=f"--gpu auto: {why}, {count} needed", candidates=tuple(candidates))
        # Most free memory first; the lower CUDA index breaks ties, so the choice is stable.
        best = sorted(usable, key=lambda g: (-g.device.free_bytes, g.cuda_index))[:count]
        best.sort(key=lambda g: g.cuda_index)
        free = ", ".join(f"cuda:{g.cuda_index} {g.device.free_bytes / 2**30:.1f} GiB free" for g in best)
        return GpuChoice(
            tuple(best), reason=f"--gpu auto: most free memory ({free})", candidates=tuple(candidates)
        )
    try:
        wanted = [int(p) for p in spec.split(",") if p.strip()]
    except ValueError:
        raise ValueError(f"--gpu must be auto, none or comma-separated GPU indices, not '{spec}'") from None
    by_index = {g.cuda_index: g for g in candidates}
    missing = [i for i in wanted if i not in by_index]
    if missing:
        raise ValueError(
            f"--gpu {spec}: no visible GPU with index {', '.join(map(str, missing))} "
            f"({len(candidates)} visible{_env_note(environ)})"
        )
    if len(set(wanted)) != len(wanted):
        raise ValueError(f"--gpu {spec}: an index is listed twice")
    return GpuChoice(tuple(by_index[i] for i in wanted), reason=f"--gpu {spec}", candidates=tuple(candidates))


def _env_note(environ: Mapping[str, str]) -> str:
    value = environ.get("CUDA_VISIBLE_DEVICES")
    return "" if value is None else f" under CUDA_VISIBLE_DEVICES={value}"


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
