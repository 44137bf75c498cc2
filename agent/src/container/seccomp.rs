//! The spec's `linux.seccomp`: parsed from the host's JSON into a [`SeccompPlan`] (checked, bounded,
//! serialisable for the runner's second stage), then compiled to BPF and installed by that stage
//! as the last step before `execve`, for the init process and every exec alike.
//!
//! One OCI profile becomes one or more stacked kernel filters, compiled by `seccompiler` (pure
//! Rust): a base filter that answers the profile's `defaultAction` for every syscall no rule
//! names (and lets the named ones through), and one filter per other action the rules use, which
//! answers that action where its rules match. The kernel takes the most restrictive answer of all
//! installed filters, so a call matched by an `SCMP_ACT_ALLOW` rule and an `SCMP_ACT_ERRNO` rule
//! gets the error: the stricter rule wins. Installing a filter sets `no_new_privileges` (as
//! `seccompiler` does), which is stricter than runc when the spec leaves it off: under a profile,
//! setuid programs do not gain privileges.

use std::collections::{BTreeMap, BTreeSet};

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Most rules (entries of `syscalls`) and most syscall names over all rules.
const MAX_RULES: usize = 1024;
const MAX_NAMES: usize = 4096;
/// The kernel passes six syscall arguments.
const MAX_ARG_INDEX: u32 = 5;
/// The errno `SCMP_ACT_ERRNO` returns when the spec names none: EPERM, as runc.
const DEFAULT_ERRNO: u32 = 1;
/// Largest errno a filter may return (the kernel's SECCOMP_RET_DATA is 16 bits; errno <= 4095).
const MAX_ERRNO: u32 = 4095;

/// What the kernel does with a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) enum Action {
    /// Let it through.
    Allow,
    /// Let it through and log it.
    Log,
    /// Fail it with this errno.
    Errno(u32),
    /// SIGSYS to the caller.
    Trap,
    /// Kill the calling thread.
    KillThread,
    /// Kill the process.
    KillProcess,
}

/// A comparison of one syscall argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ArgCheck {
    /// Which argument (0 to 5).
    pub index: u8,
    /// The operator, with `value_two` folded in for a masked comparison.
    pub op: CmpOp,
    /// The value compared with.
    pub value: u64,
}

/// The OCI comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum CmpOp {
    /// `SCMP_CMP_NE`.
    Ne,
    /// `SCMP_CMP_LT`.
    Lt,
    /// `SCMP_CMP_LE`.
    Le,
    /// `SCMP_CMP_EQ`.
    Eq,
    /// `SCMP_CMP_GE`.
    Ge,
    /// `SCMP_CMP_GT`.
    Gt,
    /// `SCMP_CMP_MASKED_EQ`: `arg & mask == value`.
    MaskedEq(u64),
}

/// One rule: a syscall (by number on this architecture), the argument checks that must all hold,
/// and the action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Rule {
    /// Syscall number (x86_64).
    pub syscall: i64,
    /// All must hold; none means every call of the syscall.
    pub args: Vec<ArgCheck>,
    /// What happens when it matches.
    pub action: Action,
}

/// A checked seccomp profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SeccompPlan {
    /// For calls no rule matches.
    pub default: Action,
    /// The rules, in spec order.
    pub rules: Vec<Rule>,
    /// Names in the profile that this architecture has no syscall for (skipped, as runc does).
    pub unknown: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawProfile {
    default_action: String,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Vec<String>,
    #[serde(default)]
    flags: Vec<String>,
    #[serde(default)]
    listener_path: Option<String>,
    #[serde(default)]
    listener_metadata: Option<String>,
    #[serde(default)]
    syscalls: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawRule {
    names: Vec<String>,
    action: String,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Vec<RawArg>,
    // Docker's profile documents each rule (what to include for which kernel or capability,
    // decided when the profile was written); none of these changes what the rule does.
    #[serde(default, rename = "comment")]
    _comment: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "includes")]
    _includes: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "excludes")]
    _excludes: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawArg {
    index: u32,
    value: u64,
    #[serde(default)]
    value_two: u64,
    op: String,
}

/// Parses and checks `linux.seccomp`. Errors say what is refused and why.
pub(crate) fn parse(value: &Value) -> Result<SeccompPlan, String> {
    let raw: RawProfile = serde_json::from_value(value.clone())
        .map_err(|e| format!("linux.seccomp is not a profile this runner reads: {e}"))?;
    if raw.listener_path.is_some() || raw.listener_metadata.is_some() {
        return Err(
            "linux.seccomp.listenerPath: seccomp notification (a host agent deciding \
                    syscalls) is not supported"
                .into(),
        );
    }
    if !raw.architectures.is_empty() && !raw.architectures.iter().any(|a| a == "SCMP_ARCH_X86_64") {
        return Err(format!(
            "linux.seccomp.architectures {:?} does not include SCMP_ARCH_X86_64, this guest's",
            raw.architectures
        ));
    }
    for flag in &raw.flags {
        // TSYNC: the runner is single-threaded when it installs; LOG and SPEC_ALLOW only change
        // logging and speculation mitigations. Anything else is not understood.
        if !matches!(
            flag.as_str(),
            "SECCOMP_FILTER_FLAG_TSYNC"
                | "SECCOMP_FILTER_FLAG_LOG"
                | "SECCOMP_FILTER_FLAG_SPEC_ALLOW"
        ) {
            return Err(format!("linux.seccomp.flags: {flag:?} is not supported"));
        }
    }
    let default = action(&raw.default_action, raw.default_errno_ret)?;
    if raw.syscalls.len() > MAX_RULES {
        return Err(format!("linux.seccomp: more than {MAX_RULES} rules"));
    }
    let names: usize = raw.syscalls.iter().map(|r| r.names.len()).sum();
    if names > MAX_NAMES {
        return Err(format!(
            "linux.seccomp: more than {MAX_NAMES} syscall names"
        ));
    }
    let mut rules = Vec::new();
    let mut unknown = BTreeSet::new();
    for rule in &raw.syscalls {
        let action = action(&rule.action, rule.errno_ret)?;
        let args = rule.args.iter().map(arg).collect::<Result<Vec<_>, _>>()?;
        for name in &rule.names {
            match name.parse::<syscalls::Sysno>() {
                Ok(sysno) => rules.push(Rule {
                    syscall: i64::from(sysno.id()),
                    args: args.clone(),
                    action,
                }),
                Err(_) => {
                    unknown.insert(name.chars().take(64).collect::<String>());
                }
            }
        }
    }
    Ok(SeccompPlan {
        default,
        rules,
        unknown: unknown.into_iter().collect(),
    })
}

fn action(name: &str, errno: Option<u32>) -> Result<Action, String> {
    let errno = errno.unwrap_or(DEFAULT_ERRNO);
    Ok(match name {
        "SCMP_ACT_ALLOW" => Action::Allow,
        "SCMP_ACT_LOG" => Action::Log,
        "SCMP_ACT_ERRNO" if errno <= MAX_ERRNO => Action::Errno(errno),
        "SCMP_ACT_ERRNO" => return Err(format!("linux.seccomp: errnoRet {errno} is too large")),
        "SCMP_ACT_TRAP" => Action::Trap,
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => Action::KillThread,
        "SCMP_ACT_KILL_PROCESS" => Action::KillProcess,
        "SCMP_ACT_TRACE" | "SCMP_ACT_NOTIFY" => {
            return Err(format!(
                "linux.seccomp: {name} hands syscalls to another process, which this runner \
                 does not support"
            ));
        }
        other => {
            return Err(format!(
                "linux.seccomp: unknown action {:?}",
                other.chars().take(64).collect::<String>()
            ));
        }
    })
}

fn arg(raw: &RawArg) -> Result<ArgCheck, String> {
    if raw.index > MAX_ARG_INDEX {
        return Err(format!(
            "linux.seccomp: argument index {} (syscalls have 6 arguments, 0 to 5)",
            raw.index
        ));
    }
    let op = match raw.op.as_str() {
        "SCMP_CMP_NE" => CmpOp::Ne,
        "SCMP_CMP_LT" => CmpOp::Lt,
        "SCMP_CMP_LE" => CmpOp::Le,
        "SCMP_CMP_EQ" => CmpOp::Eq,
        "SCMP_CMP_GE" => CmpOp::Ge,
        "SCMP_CMP_GT" => CmpOp::Gt,
        // libseccomp's masked form: `value` is the mask, `valueTwo` what the masked bits equal.
        "SCMP_CMP_MASKED_EQ" => {
            return Ok(ArgCheck {
                index: u8::try_from(raw.index).unwrap_or(u8::MAX),
                op: CmpOp::MaskedEq(raw.value),
                value: raw.value_two,
            });
        }
        other => {
            return Err(format!(
                "linux.seccomp: unknown comparison {:?}",
                other.chars().take(64).collect::<String>()
            ));
        }
    };
    Ok(ArgCheck {
        index: u8::try_from(raw.index).unwrap_or(u8::MAX),
        op,
        value: raw.value,
    })
}

fn kernel_action(action: Action) -> SeccompAction {
    match action {
        Action::Allow => SeccompAction::Allow,
        Action::Log => SeccompAction::Log,
        Action::Errno(errno) => SeccompAction::Errno(errno),
        Action::Trap => SeccompAction::Trap,
        Action::KillThread => SeccompAction::KillThread,
        Action::KillProcess => SeccompAction::KillProcess,
    }
}

/// The rules of `rules` as seccompiler's map: per syscall, the argument conditions of each rule
/// (any may match); a rule without conditions matches every call of its syscall.
fn rule_map<'a>(
    rules: impl Iterator<Item = &'a Rule>,
) -> Result<BTreeMap<i64, Vec<SeccompRule>>, String> {
    let mut map: BTreeMap<i64, Option<Vec<SeccompRule>>> = BTreeMap::new();
    for rule in rules {
        let entry = map.entry(rule.syscall).or_insert_with(|| Some(Vec::new()));
        if rule.args.is_empty() {
            // Unconditional: every call matches, whatever the other rules say.
            *entry = None;
            continue;
        }
        let conditions = rule
            .args
            .iter()
            .map(|a| {
                let op = match a.op {
                    CmpOp::Ne => SeccompCmpOp::Ne,
                    CmpOp::Lt => SeccompCmpOp::Lt,
                    CmpOp::Le => SeccompCmpOp::Le,
                    CmpOp::Eq => SeccompCmpOp::Eq,
                    CmpOp::Ge => SeccompCmpOp::Ge,
                    CmpOp::Gt => SeccompCmpOp::Gt,
                    CmpOp::MaskedEq(mask) => SeccompCmpOp::MaskedEq(mask),
                };
                SeccompCondition::new(a.index, SeccompCmpArgLen::Qword, op, a.value)
                    .map_err(|e| format!("seccomp condition on argument {}: {e}", a.index))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(list) = entry {
            list.push(SeccompRule::new(conditions).map_err(|e| format!("seccomp rule: {e}"))?);
        }
    }
    Ok(map
        .into_iter()
        .map(|(syscall, rules)| (syscall, rules.unwrap_or_default()))
        .collect())
}

/// Compiles `plan` into the filters to install, base filter first.
pub(crate) fn compile(plan: &SeccompPlan) -> Result<Vec<BpfProgram>, String> {
    let mut filters = Vec::new();
    // A rule whose action is the default changes nothing.
    let effective = || plan.rules.iter().filter(|r| r.action != plan.default);
    if plan.default != Action::Allow {
        // Every call a rule matches passes this one; the others get the default.
        let named = rule_map(effective())?;
        filters.push(SeccompFilter::new(
            named,
            kernel_action(plan.default),
            SeccompAction::Allow,
            TargetArch::x86_64,
        ));
    }
    let actions: BTreeSet<Action> = effective()
        .map(|r| r.action)
        .filter(|a| *a != Action::Allow)
        .collect();
    for action in actions {
        let matching = rule_map(effective().filter(|r| r.action == action))?;
        filters.push(SeccompFilter::new(
            matching,
            SeccompAction::Allow,
            kernel_action(action),
            TargetArch::x86_64,
        ));
    }
    filters
        .into_iter()
        .map(|filter| {
            filter
                .map_err(|e| format!("seccomp filter: {e}"))?
                .try_into()
                .map_err(|e: seccompiler::BackendError| format!("seccomp filter: {e}"))
        })
        .collect()
}

/// Installs `programs` on the calling thread (which sets `no_new_privileges`). Called by the
/// runner's second stage right before `execve`.
pub(crate) fn install(programs: &[BpfProgram]) -> Result<(), String> {
    for program in programs {
        seccompiler::apply_filter(program).map_err(|e| format!("installing seccomp: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn sysno(name: &str) -> i64 {
        i64::from(name.parse::<syscalls::Sysno>().unwrap().id())
    }

    /// Shaped like Docker's default profile: an allow list with an errno default, a conditional
    /// allow, and documentation fields.
    fn docker_like() -> Value {
        json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 1,
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [
                {"names": ["read", "write", "exit_group", "not_a_syscall_here"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}],
                 "comment": "", "includes": {}, "excludes": {}},
                {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
                {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}
            ]
        })
    }

    #[test]
    fn a_docker_like_profile_parses_with_its_rules_in_order() {
        let plan = parse(&docker_like()).unwrap();
        assert_eq!(plan.default, Action::Errno(1));
        assert_eq!(plan.unknown, vec!["not_a_syscall_here".to_owned()]);
        assert_eq!(plan.rules.len(), 6);
        assert_eq!(plan.rules[0].syscall, sysno("read"));
        assert_eq!(plan.rules[3].syscall, sysno("personality"));
        assert_eq!(
            plan.rules[3].args,
            vec![ArgCheck {
                index: 0,
                op: CmpOp::Eq,
                value: 0
            }]
        );
        assert_eq!(
            plan.rules[4].args[0],
            ArgCheck {
                index: 0,
                op: CmpOp::MaskedEq(2_114_060_288),
                value: 0
            }
        );
        assert_eq!(plan.rules[5].action, Action::Errno(38));
        // A base filter for the default, and one for the errno rule.
        assert_eq!(compile(&plan).unwrap().len(), 2);
    }

    #[test]
    fn a_deny_list_profile_compiles_to_one_filter() {
        let plan = parse(&json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]
        }))
        .unwrap();
        assert_eq!(plan.rules[0].action, Action::Errno(DEFAULT_ERRNO));
        assert_eq!(compile(&plan).unwrap().len(), 1);
    }

    #[test]
    fn what_the_runner_cannot_honour_is_refused_by_name() {
        let cases = [
            (
                json!({"defaultAction": "SCMP_ACT_NOTIFY"}),
                "SCMP_ACT_NOTIFY hands syscalls",
            ),
            (
                json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/x.sock"}),
                "listenerPath",
            ),
            (
                json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_AARCH64"]}),
                "SCMP_ARCH_X86_64",
            ),
            (
                json!({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_NEW_LISTENER"]}),
                "flags",
            ),
            (
                json!({"defaultAction": "SCMP_ACT_EVERYTHING"}),
                "unknown action",
            ),
            (
                json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 6, "value": 0, "op": "SCMP_CMP_EQ"}]}]}),
                "argument index 6",
            ),
            (
                json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_SOMETIMES"}]}]}),
                "unknown comparison",
            ),
            (
                json!({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 70000}),
                "too large",
            ),
            (
                json!({"defaultAction": "SCMP_ACT_ALLOW", "surprise": true}),
                "not a profile",
            ),
            (json!("SCMP_ACT_ALLOW"), "not a profile"),
        ];
        for (profile, said) in cases {
            let err = parse(&profile).unwrap_err();
            assert!(err.contains(said), "{profile}: {err}");
        }
    }

    #[test]
    fn oversized_profiles_are_refused() {
        let rules: Vec<Value> = (0..=MAX_RULES)
            .map(|_| json!({"names": ["read"], "action": "SCMP_ACT_ALLOW"}))
            .collect();
        let err =
            parse(&json!({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": rules})).unwrap_err();
        assert!(err.contains("rules"), "{err}");
        let names: Vec<String> = (0..=MAX_NAMES).map(|i| format!("n{i}")).collect();
        let err = parse(&json!({"defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{"names": names, "action": "SCMP_ACT_ALLOW"}]}))
        .unwrap_err();
        assert!(err.contains("names"), "{err}");
    }

    #[test]
    fn rules_that_repeat_the_default_add_nothing_and_an_empty_profile_compiles() {
        let plan = parse(&json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]
        }))
        .unwrap();
        assert_eq!(compile(&plan).unwrap().len(), 1);
        let plan = parse(&json!({"defaultAction": "SCMP_ACT_KILL_PROCESS"})).unwrap();
        assert_eq!(compile(&plan).unwrap().len(), 1);
        let plan = parse(&json!({"defaultAction": "SCMP_ACT_ALLOW"})).unwrap();
        assert!(compile(&plan).unwrap().is_empty());
    }

    #[test]
    fn an_unconditional_rule_wins_over_conditional_ones_for_its_syscall() {
        let plan = parse(&json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW"}
            ]
        }))
        .unwrap();
        let map = rule_map(plan.rules.iter()).unwrap();
        assert_eq!(map.get(&sysno("personality")).map(Vec::len), Some(0));
    }
}
