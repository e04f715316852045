"""Which runs the rules sensor requests for each kind of rule action."""

from prep_assets.rule_runs import plan_rule_runs
from prep_assets.rules import Action, RuleAction

NEW_SYSTEM = [
    RuleAction("new", Action.PROVISION, "new system: provision its tools", "system_added", "abc"),
    RuleAction("new", Action.BASELINE, "new system: collect its baselines", "system_added", "abc"),
]
OTHERS = [
    RuleAction(
        "gone", Action.ALERT, "system disappeared unexpectedly: no commit", "system_removed"
    ),
    RuleAction("down", Action.INVESTIGATE, "access unreachable: refused", "access_broken"),
    RuleAction("old", Action.PROVISION, "tools missing or outdated: iostat", "tools_missing"),
    RuleAction("retired", Action.RECORD, "system removed as planned", "system_removed", "def"),
]


def test_new_system_gets_checks_provisioning_and_baselines():
    runs, _outcomes = plan_rule_runs(NEW_SYSTEM, provisioning_enabled=False)

    assert len(runs) == 1
    assert runs[0].system == "new"
    assert runs[0].steps == (
        "access_status",
        "tool_status",
        "provisioned_tools",
        "baselines",
        "prep_status_doc",
    )
    tags = runs[0].tags("run-7")
    assert tags["prep/actions"] == "provision,baseline"
    assert tags["prep/triggers"] == "system_added"
    assert tags["prep/rule_actions_run"] == "run-7"
    assert "new system: collect its baselines" in tags["prep/reasons"]


def test_missing_tools_run_only_when_enabled():
    disabled_runs, disabled_outcomes = plan_rule_runs(OTHERS, provisioning_enabled=False)
    enabled_runs, _ = plan_rule_runs(OTHERS, provisioning_enabled=True)

    assert disabled_runs == []
    outcome = next(o for o in disabled_outcomes if o.system == "old")
    assert outcome.outcome == "skipped: provisioning is disabled"
    assert [run.system for run in enabled_runs] == ["old"]
    assert "provisioned_tools" in enabled_runs[0].steps
    assert "baselines" not in enabled_runs[0].steps


def test_alert_investigate_and_record_request_no_run():
    runs, outcomes = plan_rule_runs(OTHERS, provisioning_enabled=True)

    assert {run.system for run in runs} == {"old"}
    by_system = {outcome.system: outcome for outcome in outcomes}
    assert by_system["gone"].outcome == "alert"
    assert by_system["down"].outcome == "investigation item in the status document"
    assert by_system["down"].trigger == "access_broken"
    assert by_system["retired"].outcome == "recorded"
