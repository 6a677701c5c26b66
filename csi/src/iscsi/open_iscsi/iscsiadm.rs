//! `iscsiadm` as the attacher uses it: the command lines (node records by
//! target and portal) and what its exit codes mean (open-iscsi's
//! `iscsi_err.h`).

use super::super::command::Cmd;
use super::super::LoginFailure;

/// iSCSI database failure (`ISCSI_ERR_IDBM`): another iscsiadm held the
/// record; worth another try.
pub(super) const IDBM: i32 = 6;
/// The session already exists (`ISCSI_ERR_SESS_EXISTS`).
pub(super) const SESSION_EXISTS: i32 = 15;
/// No records, targets or sessions found (`ISCSI_ERR_NO_OBJS_FOUND`).
pub(super) const NO_OBJECTS: i32 = 21;

/// iscsid could not be reached (`ISCSID_COMM_ERR` 18, `ISCSID_NOTCONN` 20):
/// it is down or restarting.
pub(super) fn iscsid_unreachable(code: i32) -> bool {
    matches!(code, 18 | 20)
}

/// What a `--login` exit code asks for next.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum LoginStep {
    /// Logged in (or already).
    Done,
    /// Try again later: the portal did not answer, timed out, was busy, or
    /// iscsid was unreachable.
    Retry,
    /// The target refused the initiator (19): retried a few times, since a
    /// node that held the only session may be letting go of it.
    Refused,
    /// Trying again cannot help.
    Fail(LoginFailure),
}

pub(super) fn login_step(code: i32) -> LoginStep {
    match code {
        0 | SESSION_EXISTS => LoginStep::Done,
        24 => LoginStep::Fail(LoginFailure::Chap),
        19 => LoginStep::Refused,
        12 => LoginStep::Fail(LoginFailure::NoTransport),
        _ => LoginStep::Retry,
    }
}

pub(super) fn node(iqn: &str, portal: &str, args: &[&str]) -> Cmd {
    Cmd::new("iscsiadm", &["-m", "node", "-T", iqn, "-p", portal]).args_from(args)
}

/// `-o update -n <name> -v` (the value is appended by the caller).
pub(super) fn set(iqn: &str, portal: &str, name: &str) -> Cmd {
    node(iqn, portal, &["-o", "update", "-n", name, "-v"])
}

pub(super) fn discoverydb(portal: &str, args: &[&str]) -> Cmd {
    Cmd::new("iscsiadm", &["-m", "discoverydb", "-t", "sendtargets", "-p", portal]).args_from(args)
}

pub(super) fn session_logout(id: u32) -> Cmd {
    Cmd::new("iscsiadm", &["-m", "session", "-r", &id.to_string(), "-u"])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_decide_retries() {
        assert_eq!(login_step(0), LoginStep::Done);
        assert_eq!(login_step(15), LoginStep::Done);
        assert_eq!(login_step(24), LoginStep::Fail(LoginFailure::Chap));
        assert_eq!(login_step(19), LoginStep::Refused);
        assert_eq!(login_step(12), LoginStep::Fail(LoginFailure::NoTransport));
        for transient in [4, 5, 8, 11, 18, 20, 28, -1] {
            assert_eq!(login_step(transient), LoginStep::Retry, "exit code {transient}");
        }
        assert!(iscsid_unreachable(20) && iscsid_unreachable(18) && !iscsid_unreachable(21));
    }
}
