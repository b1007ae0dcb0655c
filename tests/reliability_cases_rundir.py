"""Issue 16 cases of the run-directory work (branch `rundir`), for the repeatable reliability script.

Each entry is (category, what was tried, pytest node id). Categories match the README's reliability section:
`kill` (a kill, then a clean recovery: the same end state as an uninterrupted run), `writer` (a second writer on a
run directory, refused or outlived), `read_only` (a read command that must not write), `bad_input` (refused with one
line, exit 2, nothing written). A case counts as clean when its test passes. `node_ids(category)` lists the ids to
hand to pytest, e.g. `pytest $(python tests/reliability_cases_rundir.py kill)`.
"""

from __future__ import annotations

import sys

F = "tests/test_run_dir_integrity.py::"
M = "tests/test_memory_store.py::"

CASES: list[tuple[str, str, str]] = [
    ("kill", "finished run resumed again (twice): same end, no 4th step",
     F + "test_a_finished_run_resumed_again_ends_the_same_and_trains_no_fourth_step"),
    ("kill", "killed during the final evaluation",
     F + "test_killed_during_the_final_evaluation_resumes_to_the_same_end"),
    ("kill", "killed during the final save (half-written final/)",
     F + "test_killed_during_the_final_save_resumes_to_the_same_end"),
    ("kill", "killed while writing the report (torn report)",
     F + "test_killed_while_writing_the_report_resumes_to_the_same_end"),
    ("kill", "real SIGKILL of pmd train inside the final save, then --resume",
     F + "test_kill_9_during_the_final_save_then_resume"),
    ("kill", "disk full at the first checkpoint (one line), then --resume with room (root only)",
     F + "test_a_disk_that_fills_during_training_is_one_line_and_the_run_resumes_once_there_is_room"),
    ("writer", "held run dir: fresh start, resume, fresh start on an empty dir",
     F + "test_a_held_run_dir_refuses_a_fresh_start_and_a_resume_and_writes_nothing"),
    ("writer", "second pmd train and concurrent --resume while the first trains",
     F + "test_a_second_train_and_a_concurrent_resume_stop_while_the_first_trains"),
    ("writer", "the kernel releases a SIGKILLed holder's lock",
     F + "test_the_kernel_releases_the_lock_of_a_killed_holder"),
    ("writer", "pmd compare sub-run on a held run dir", F + "test_a_compare_sub_run_takes_its_run_dirs_lock"),
    *[("read_only", f"pmd memory {name} on a checkpoint copy and a closed WAL store",
       F + f"test_memory_commands_leave_the_store_byte_for_byte[{name}]")
      for name in ("stats", "show", "show-retrievals", "export")],
    ("read_only", "pmd report and pmd explain", F + "test_report_and_explain_leave_the_store_byte_for_byte"),
    ("read_only", "memory stats and report on a run being trained (live WAL)",
     F + "test_a_run_being_trained_can_be_inspected_and_reported"),
    ("read_only", "writes through a read-only store fail", F + "test_a_read_only_store_refuses_writes"),
    *[("read_only", f"store opened read-only: {kind}",
       M + f"test_read_only_open_changes_no_byte_and_creates_no_sidecar[{kind}]")
      for kind in ("checkpoint_copy", "closed_wal_store")],
    ("read_only", "read-only open beside a live writer", M + "test_read_only_open_sees_a_live_writers_committed_rows"),
    ("read_only", "memory.load_from source in WAL mode", M + "test_restore_leaves_a_wal_mode_source_untouched"),
    *[("bad_input", f"memory export --out onto {target}",
       F + f"test_export_refuses_a_file_it_would_destroy[{target}]")
      for target in ("same", "dot", "symlink", "hardlink", "wal", "other_store", "config")],
    ("bad_input", "memory export on a full disk (new file and over an earlier export)",
     F + "test_export_replaces_an_earlier_export_and_writes_whole_files_only"),
    *[("bad_input", f"pmd report with {damage}",
       F + f"test_report_refuses_bad_inputs_before_it_rewrites_anything[{damage}]")
      for damage in ("foreign_db", "corrupt_db", "summary_list", "summary_steps_text", "summary_seconds_text",
                     "summary_truncated", "eval_overall_number", "eval_metric_text")],
    ("bad_input", "pmd eval --set/--memory without a config file (honoured)",
     F + "test_eval_without_a_config_file_honours_set_and_memory"),
    ("bad_input", "pmd explain on a relative run dir without final/",
     F + "test_explain_a_relative_run_without_final_is_one_line_and_never_looks_for_a_model"),
    *[("bad_input", f"run_dir {what}", F + f"test_impossible_run_dirs_are_refused_before_any_write[{what}]")
      for what in ("empty", "blank", "proc", "sys")],
    ("bad_input", "disk full while writing config.yaml",
     F + "test_a_full_disk_while_writing_the_config_leaves_nothing"),
    ("bad_input", "full 4 MB tmpfs: export, report, train (root only)",
     F + "test_a_full_disk_is_one_line_and_leaves_no_temporary_or_empty_file"),
    ("bad_input", "read-only run dir: train --resume, report, export; stats still reads (root only)",
     F + "test_a_read_only_run_dir_is_one_line_and_still_readable"),
    ("bad_input", "missing memory.reflector model path",
     F + "test_a_missing_reflector_model_is_refused_before_the_run_dir_exists"),
    # issue 27: memory files and run dir
    ("writer", "pmd report on a run a live train holds",
     F + "test_pmd_report_on_a_run_a_live_train_holds_is_refused_and_writes_nothing"),
    ("read_only", "a -wal left without its -shm: read whole, nothing created beside it",
     M + "test_a_wal_without_its_shm_is_read_whole_and_nothing_is_created_beside_it"),
    *[("bad_input", f"memory store with a foreign {kind} (load_from, read commands)",
       M + f"test_a_schema_object_pmd_did_not_create_is_refused_and_never_copied[{kind}]")
      for kind in ("trigger", "view", "table", "index", "column")],
    *[("bad_input", f"memory store value pmd would not write: {kind}",
       M + f"test_a_value_pmd_would_not_write_is_named_by_table_column_and_row[{kind}]")
      for kind in ("reward_text", "reward_infinite", "passed_2", "step_real", "prompt_blob", "failure_kind_unknown",
                   "insight_ids_not_json", "insight_ids_strings", "pattern_status", "item_refs_not_json",
                   "item_refs_numbers", "meta_not_json", "last_reflected_text")],
    ("bad_input", "pmd report with Infinity/NaN memory counts and a non-UTF-8 metrics line",
     F + "test_report_skips_metrics_rows_it_cannot_show_and_still_reports"),
    ("bad_input", "--resume from a checkpoint whose trainer_state.json is damaged in place",
     F + "test_a_resume_from_a_checkpoint_whose_trainer_state_is_damaged_is_one_line_and_writes_nothing"),
]


def node_ids(category: str | None = None) -> list[str]:
    return [node for cat, _, node in CASES if category in (None, cat)]


LABELS = {"kill": "kills and clean recoveries", "writer": "second writers refused or outlived",
          "read_only": "read commands left the store byte for byte", "bad_input": "run-dir bad inputs clean"}


def reliability_figures() -> str:
    """One line for benchmarks/reliability.py: each category's cases run by pytest in a subprocess (the kill cases
    start real `pmd train` processes); a case is clean when its test passes. Takes a few minutes."""
    import subprocess
    import xml.etree.ElementTree as ET
    from pathlib import Path
    from tempfile import TemporaryDirectory

    root = Path(__file__).resolve().parent.parent
    with TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
                        *node_ids()], cwd=root, capture_output=True, text=True)
        passed = set()  # a case counts only when pytest ran it and it passed (not absent, skipped or failed)
        if report.exists():
            for case in ET.parse(report).iter("testcase"):
                if not any(case.find(tag) is not None for tag in ("failure", "error", "skipped")):
                    passed.add(case.get("name"))
    parts = []
    for cat, label in LABELS.items():
        nodes = node_ids(cat)
        clean = sum(node.split("::")[-1] in passed for node in nodes)
        parts.append(f"{label}: {clean} of {len(nodes)}")
    return "; ".join(parts)


if __name__ == "__main__":
    print("\n".join(node_ids(sys.argv[1] if len(sys.argv) > 1 else None)))
