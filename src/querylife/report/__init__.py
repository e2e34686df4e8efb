"""Reports, written atomically: the results report (:mod:`.results`: report.md, report.json, PNG plots), the
report of a suite run (:mod:`.suite`) and GenFilt's tables and files (:mod:`.genfilt`).

Only formatting and writing live here; the numbers come from :mod:`querylife.evaluate`, :mod:`querylife.suite`
and :mod:`querylife.genfilt.quality`.
"""

from .genfilt import genfilt_section, mask_table_text, write_judge_outputs, write_mask_report
from .results import HEADLINE, MAIN_COLUMNS, md_table, results_table_text, write_report
from .suite import group_table, suite_machine_info, write_scores, write_suite_report

__all__ = [
    "HEADLINE",
    "MAIN_COLUMNS",
    "genfilt_section",
    "group_table",
    "mask_table_text",
    "md_table",
    "results_table_text",
    "suite_machine_info",
    "write_judge_outputs",
    "write_mask_report",
    "write_report",
    "write_scores",
    "write_suite_report",
]
