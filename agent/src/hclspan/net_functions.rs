//! IP prefix arithmetic as Nomad's `cidrhost`, `cidrnetmask`,
//! `cidrsubnet` and `cidrsubnets` do it, for IPv4 and IPv6, with
//! addresses held as `u128`. Declared into the same context as
//! `functions`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hcl::eval::{Context, FuncArgs, FuncDef, ParamType};
use hcl::Value;

use super::func_support::{int, s, Res};

/// A prefix: its network address (host bits cleared), its length and the
/// address width (32 or 128 bits).
#[derive(Debug, Clone, Copy)]
struct Net {
    addr: u128,
    len: u32,
    bits: u32,
}

/// The low `n` bits set.
fn ones(n: u32) -> u128 {
    if n >= 128 {
        u128::MAX
    } else {
        (1 << n) - 1
    }
}

impl Net {
    /// Parses `a.b.c.d/len` or `x::y/len`; host bits may be set, as Go's
    /// `net.ParseCIDR` allows.
    fn parse(func: &str, text: &str) -> Result<Net, String> {
        let bad = |why: &str| format!("{func}: invalid CIDR expression {text:?}: {why}");
        let (ip, len) = text.split_once('/').ok_or_else(|| bad("no /length"))?;
        let (addr, bits) = match ip.parse::<IpAddr>().map_err(|e| bad(&e.to_string()))? {
            IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
            IpAddr::V6(v6) => (u128::from(v6), 128),
        };
        let len = Some(len)
            .filter(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|l| l.parse::<u32>().ok())
            .filter(|l| *l <= bits)
            .ok_or_else(|| bad("bad prefix length"))?;
        let net = Net { addr, len, bits };
        Ok(Net { addr: addr & net.mask(), ..net })
    }

    /// The netmask, as a number.
    fn mask(&self) -> u128 {
        ones(self.bits) & !ones(self.bits - self.len)
    }

    /// The last address in the prefix.
    fn last(&self) -> u128 {
        self.addr | ones(self.bits - self.len)
    }

    fn contains(&self, addr: u128) -> bool {
        addr & self.mask() == self.addr
    }

    fn ip(&self, addr: u128) -> String {
        if self.bits == 32 {
            Ipv4Addr::from(addr as u32).to_string()
        } else {
            Ipv6Addr::from(addr).to_string()
        }
    }

    /// The prefix of length `len` holding `addr`.
    fn at(&self, addr: u128, len: u32) -> Net {
        let net = Net { addr, len, ..*self };
        Net { addr: addr & net.mask(), ..net }
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ip(self.addr), self.len)
    }
}

/// `cidrhost(prefix, hostnum)`: the address numbered `hostnum` in the
/// prefix; a negative number counts back from its last address (-1).
fn cidrhost(a: FuncArgs) -> Res {
    let net = Net::parse("cidrhost", s(&a[0]))?;
    let num = int(&a[1], "cidrhost hostnum")?;
    let max = ones(net.bits - net.len);
    let offset = match u128::try_from(num) {
        Ok(n) => Some(n).filter(|n| *n <= max),
        Err(_) => max.checked_sub(u128::from(num.unsigned_abs()) - 1),
    };
    let offset =
        offset.ok_or_else(|| format!("cidrhost: prefix of {} does not accommodate a host numbered {num}", net.len))?;
    Ok(net.ip(net.addr | offset).into())
}

/// `cidrnetmask(prefix)`: the netmask in address form (an IPv6 prefix
/// gets an IPv6-form mask, as in Nomad).
fn cidrnetmask(a: FuncArgs) -> Res {
    let net = Net::parse("cidrnetmask", s(&a[0]))?;
    Ok(net.ip(net.mask()).into())
}

/// `cidrsubnet(prefix, newbits, netnum)`: subnet `netnum` of those
/// `newbits` longer than the prefix.
fn cidrsubnet(a: FuncArgs) -> Res {
    let net = Net::parse("cidrsubnet", s(&a[0]))?;
    let (newbits, netnum) = (int(&a[1], "cidrsubnet newbits")?, int(&a[2], "cidrsubnet netnum")?);
    if !(0..=32).contains(&newbits) {
        return Err(format!("cidrsubnet: newbits {newbits} must be between 0 and 32"));
    }
    let len = net.len + newbits as u32;
    if len > net.bits {
        return Err(format!("cidrsubnet: insufficient address space to extend prefix of {} by {newbits}", net.len));
    }
    if netnum < 0 || netnum as u128 > ones(newbits as u32) {
        return Err(format!(
            "cidrsubnet: prefix extension of {newbits} does not accommodate a subnet numbered {netnum}"
        ));
    }
    let offset = (netnum as u128).checked_shl(net.bits - len).unwrap_or(0);
    Ok(net.at(net.addr | offset, len).to_string().into())
}

/// `cidrsubnets(prefix, newbits...)`: consecutive subnets of the prefix,
/// each `newbits` longer than it, aligned to its own size.
fn cidrsubnets(a: FuncArgs) -> Res {
    let base = Net::parse("cidrsubnets", s(&a[0]))?;
    let family = if base.bits == 32 { "IPv4" } else { "IPv6" };
    let mut out = Vec::new();
    let mut current: Option<Net> = None;
    for (i, arg) in a.iter().enumerate().skip(1) {
        let newbits = int(arg, "cidrsubnets newbits")?;
        if !(1..=32).contains(&newbits) {
            return Err(format!("cidrsubnets: newbits #{i} ({newbits}) must be between 1 and 32"));
        }
        let len = base.len + newbits as u32;
        if len > base.bits {
            return Err(format!(
                "cidrsubnets: newbits #{i} would extend the prefix to {len} bits, which is too long for an {family} address"
            ));
        }
        // The first subnet starts at the base address; each next one after
        // the end of the one before, rounded up to its own size.
        let next = match current {
            None => base.at(base.addr, len),
            Some(prev) => {
                let after = base.at(prev.last(), len).last().wrapping_add(1) & ones(base.bits);
                if after == 0 || !base.contains(after) {
                    return Err(format!(
                        "cidrsubnets: not enough remaining address space for a subnet with a prefix of {len} bits after {prev}"
                    ));
                }
                base.at(after, len)
            }
        };
        out.push(Value::from(next.to_string()));
        current = Some(next);
    }
    Ok(Value::Array(out))
}

/// Declares these functions into `ctx`.
pub fn declare(ctx: &mut Context<'_>) {
    use ParamType::{Number as Num, String as Str};
    let fixed: [(&str, hcl::eval::Func, Vec<ParamType>); 3] = [
        ("cidrhost", cidrhost, vec![Str, Num]),
        ("cidrnetmask", cidrnetmask, vec![Str]),
        ("cidrsubnet", cidrsubnet, vec![Str, Num, Num]),
    ];
    for (name, func, params) in fixed {
        ctx.declare_func(name, FuncDef::new(func, params));
    }
    ctx.declare_func("cidrsubnets", FuncDef::builder().param(Str).variadic_param(Num).build(cidrsubnets));
}

#[cfg(test)]
mod tests {
    use super::super::functions::tests::{eval, ok};

    #[test]
    fn cidrhost_counts_from_either_end() {
        assert_eq!(ok(r#"cidrhost("10.12.112.0/20", 16)"#), r#""10.12.112.16""#);
        assert_eq!(ok(r#"cidrhost("10.12.112.0/20", 268)"#), r#""10.12.113.12""#);
        assert_eq!(ok(r#"cidrhost("10.12.112.9/24", -1)"#), r#""10.12.112.255""#);
        assert_eq!(ok(r#"cidrhost("fd00:fd12:3456:7890:00a2::/72", 34)"#), r#""fd00:fd12:3456:7890::22""#);
        assert!(eval(r#"cidrhost("10.0.0.0/30", 4)"#).unwrap_err().contains("does not accommodate a host numbered 4"));
        assert!(eval(r#"cidrhost("10.0.0.0/30", -5)"#).unwrap_err().contains("does not accommodate"));
        assert!(eval(r#"cidrhost("10.0.0.0", 1)"#).unwrap_err().contains("cidrhost: invalid CIDR expression"));
    }

    #[test]
    fn cidrnetmask_and_cidrsubnet() {
        assert_eq!(ok(r#"cidrnetmask("172.16.0.0/12")"#), r#""255.240.0.0""#);
        assert_eq!(ok(r#"cidrnetmask("fd00::/56")"#), r#""ffff:ffff:ffff:ff00::""#);
        assert!(eval(r#"cidrnetmask("10.0.0.0/33")"#).unwrap_err().contains("bad prefix length"));
        assert_eq!(ok(r#"cidrsubnet("172.16.0.0/12", 4, 2)"#), r#""172.18.0.0/16""#);
        assert_eq!(ok(r#"cidrsubnet("10.1.2.0/24", 4, 15)"#), r#""10.1.2.240/28""#);
        assert_eq!(ok(r#"cidrsubnet("fd00:fd12:3456:7890::/56", 16, 162)"#), r#""fd00:fd12:3456:7800:a200::/72""#);
        assert_eq!(ok(r#"cidrsubnet("::/0", 0, 0)"#), r#""::/0""#);
        assert!(eval(r#"cidrsubnet("10.1.2.0/24", 4, 16)"#)
            .unwrap_err()
            .contains("prefix extension of 4 does not accommodate a subnet numbered 16"));
        assert!(eval(r#"cidrsubnet("10.1.2.0/30", 3, 0)"#).unwrap_err().contains("insufficient address space"));
    }

    #[test]
    fn cidrsubnets_packs_consecutive_aligned_subnets() {
        assert_eq!(
            ok(r#"cidrsubnets("10.1.0.0/16", 4, 4, 8, 4)"#),
            r#"["10.1.0.0/20","10.1.16.0/20","10.1.32.0/24","10.1.48.0/20"]"#
        );
        assert_eq!(
            ok(r#"cidrsubnets("fd00:fd12:3456:7890::/56", 16, 16, 16, 32)"#),
            r#"["fd00:fd12:3456:7800::/72","fd00:fd12:3456:7800:100::/72","fd00:fd12:3456:7800:200::/72","fd00:fd12:3456:7800:300::/88"]"#
        );
        assert_eq!(ok(r#"cidrsubnets("0.0.0.0/0", 1, 1)"#), r#"["0.0.0.0/1","128.0.0.0/1"]"#);
        assert_eq!(ok(r#"cidrsubnets("10.0.0.0/8")"#), "[]");
        assert!(eval(r#"cidrsubnets("10.0.0.0/30", 1, 1, 1)"#)
            .unwrap_err()
            .contains("not enough remaining address space for a subnet with a prefix of 31 bits after 10.0.0.2/31"));
        assert!(eval(r#"cidrsubnets("10.0.0.0/30", 0)"#).unwrap_err().contains("must be between 1 and 32"));
    }
}
