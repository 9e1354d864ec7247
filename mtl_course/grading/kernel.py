"""The graded kernel: an IPython kernel whose memory is capped before it starts.

``python -m mtl_course.grading.kernel -f CONNECTION_FILE``, started by
:class:`LimitedKernelManager` in place of ``ipykernel_launcher``, sets
the process's data-segment limit (``RLIMIT_DATA``: heap and private mappings, which is
where tensors and arrays live) and then starts ``ipykernel``. An allocation past the
limit fails inside the student's cell (``MemoryError``, or torch's "can't allocate
memory"), the cell fails and the grader notes it; the machine is not touched.
"""
from __future__ import annotations

import os
import sys

from jupyter_client.manager import AsyncKernelManager

MEMORY_LIMIT_VARIABLE = "MTL_COURSE_GRADER_MEMORY_LIMIT"


def limit_memory(limit_bytes: int) -> bool:
    """Cap this process's data segment at ``limit_bytes`` (0 means no cap); False where the OS cannot.

    POSIX systems have ``RLIMIT_DATA`` (Linux, macOS); Windows has no ``resource``
    module, and there the kernel runs without a cap.
    """
    if limit_bytes <= 0:
        return True
    try:
        import resource
    except ImportError:
        return False
    try:
        resource.setrlimit(resource.RLIMIT_DATA, (limit_bytes, limit_bytes))
    except (ValueError, OSError):  # a hard limit below the request, or an OS without the limit
        return False
    return True


class LimitedKernelManager(AsyncKernelManager):
    """Starts the ``python3`` kernel through this module, so that its memory is capped.

    The limit comes from the kernel's environment (``MTL_COURSE_GRADER_MEMORY_LIMIT``,
    in bytes), which the grader sets for each submission.
    """

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        cmd = super().format_kernel_cmd(extra_arguments)
        if "ipykernel_launcher" not in cmd:
            raise RuntimeError(f"cannot cap the memory of a kernel started as {cmd}: expected ipykernel_launcher")
        cmd[cmd.index("ipykernel_launcher")] = "mtl_course.grading.kernel"
        return cmd


def main(argv: list[str]) -> None:
    """Cap the memory (from the environment), then run ipykernel with ``argv``."""
    limit_memory(int(os.environ.get(MEMORY_LIMIT_VARIABLE, "0")))
    from ipykernel import kernelapp

    kernelapp.launch_new_instance(argv=argv)


if __name__ == "__main__":
    main(sys.argv[1:])
