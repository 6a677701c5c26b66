//! The DSM error-code table: what each numeric code in a
//! `{"success":false,"error":{"code":N}}` answer means, and which codes ask the
//! client to log in again.
//!
//! Meanings come from the DSM Login Web API guide and the SAN Manager codes
//! that real clients (democratic-csi, synology-csi, Cinder, jt-pve) handle.
//! The login codes (400–411) only mean what the table says when they answer
//! `SYNO.API.Auth`; the simulator uses them the same way.

/// The meaning of a DSM error code, or `"unlisted DSM error"` for a code no
/// client documents.
pub fn meaning(code: i64) -> &'static str {
    match code {
        100 => "unknown error",
        101 => "missing or invalid api, method or version parameter",
        102 => "requested API does not exist",
        103 => "requested method does not exist",
        104 => "requested version does not support the functionality",
        105 => "logged-in session has no permission (or SynoToken missing with CSRF protection on)",
        106 => "session timeout",
        107 => "session interrupted by duplicated login",
        114 => "lost parameters for this API",
        117 => "no such volume, or system busy",
        119 => "invalid session: SID not found",
        150 => "request source IP does not match login IP",
        160 => "insufficient application privilege",
        400 => "no such account or incorrect password",
        401 => "account disabled",
        402 => "permission denied (the account must be an administrator)",
        403 => "2-factor authentication code required",
        404 => "2-factor authentication failed",
        406 => "2-factor authentication is enforced",
        407 => "source IP blocked (Auto Block after failed logins)",
        408 => "expired password cannot be changed",
        409 => "password expired",
        410 => "password must be changed",
        411 => "account locked after too many tries",
        18990002 => "out of free space on the volume",
        18990004 => "no such object",
        18990068 => "name too long (the object may have been created anyway)",
        18990318 => "LUN type incompatible with the volume filesystem",
        18990403 => "bad description (must be a string)",
        18990500 => "bad LUN type",
        18990502 => "LUN creation failed (undocumented DSM error)",
        18990503 => "illegal name",
        18990513 => "a snapshot with this name already exists on the LUN",
        18990505 => "bad LUN UUID",
        18990508 => "required parameter missing",
        18990531 => "no such LUN",
        18990532 => "no such snapshot",
        18990538 => "a LUN with this name already exists",
        18990540 => "snapshot deletion failed",
        18990541 => "maximum number of LUNs reached",
        18990542 => "maximum number of iSCSI targets reached",
        18990543 => "maximum number of snapshots reached",
        18990635 => "invalid I/O policy (direct_io_pattern)",
        18990708 => "bad target CHAP authentication info",
        18990710 => "no such target (or target_id not sent as a JSON string)",
        18990744 => "an iSCSI target with this name or IQN already exists",
        _ => "unlisted DSM error",
    }
}

/// Codes after which a fresh login and one retry may succeed: 105 (no
/// permission, also a missing SynoToken), 106 (session timeout) and 119
/// (unknown SID).
pub fn needs_relogin(code: i64) -> bool {
    matches!(code, 105 | 106 | 119)
}

/// Codes of a refused login (`SYNO.API.Auth`): the credentials, the
/// account or the source IP; trying again at once cannot help, and repeated
/// tries trip DSM's Auto Block.
pub fn login_refused(code: i64) -> bool {
    (400..=411).contains(&code)
}

/// What to do about a refused login, beginning with "; " (empty when the
/// meaning says it all).
pub fn login_hint(code: i64) -> &'static str {
    match code {
        400 => "; check httpConnection.username and the password",
        402 => "; the account must be in DSM's administrators group (SAN APIs are admin-only)",
        403 | 404 | 406 => "; use an account without 2-factor authentication for berth",
        407 => {
            "; this node's IP is blocked by DSM's Auto Block after failed logins: fix the password, then remove the \
             IP in DSM (Control Panel > Security > Protection > Allow/Block List) or wait for the block to expire"
        }
        401 | 408..=411 => "; the account must be usable: check it in DSM (Control Panel > User)",
        _ => "",
    }
}

/// Codes that mean "this LUN does not exist": DSM answers either, depending
/// on how the LUN was named.
pub fn is_no_such_lun(code: i64) -> bool {
    matches!(code, 18990531 | 18990505)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_codes_ask_for_relogin_and_others_do_not() {
        assert!(needs_relogin(105) && needs_relogin(106) && needs_relogin(119));
        assert!(!needs_relogin(400) && !needs_relogin(18990531));
    }

    #[test]
    fn every_code_clients_act_on_has_a_meaning() {
        for code in [400, 402, 407, 18990002, 18990531, 18990532, 18990538, 18990710, 18990744] {
            assert_ne!(meaning(code), "unlisted DSM error", "code {code}");
        }
        assert_eq!(meaning(42), "unlisted DSM error");
    }
}
