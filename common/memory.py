"""This machine's memory, and budgets of it that a command checks its
settings against before it starts (a setting that would not fit gets a
sentence with the numbers, not a process the kernel kills)."""

import os

# The share of the machine's memory one budgeted use may take (the frames an
# extraction holds in flight; a training batch as it goes through the model).
BUDGET_SHARE = 0.25


def physical_memory():
    """Bytes of memory of this machine."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def budget():
    """Bytes one budgeted use may take: ``BUDGET_SHARE`` of the machine's memory."""
    return BUDGET_SHARE * physical_memory()


def gib(count):
    """``1.5 GiB`` (or ``3 PiB`` for absurd sizes)."""
    return f"{count / 2 ** 30:,.1f} GiB" if count < 2 ** 50 else f"{count / 2 ** 50:,.0f} PiB"


def describe_budget():
    """``this machine's budget of 5.9 GiB (25% of its 23.5 GiB)``."""
    return f"the budget of {gib(budget())} ({BUDGET_SHARE:.0%} of this machine's {gib(physical_memory())})"
