//! What was made of a request, under one name all along its path: the policy's judgement, the
//! gate's decision (which adds who asked), the metrics' `decision` label and the access log's
//! `decision` field are all an [`Outcome`].

/// What was made of a request. The first four are what the rules can say, from the loosest to
/// the strictest (of two readings of one path, the stricter stands); the others say why no
/// rule was asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// No login needed.
    Public,
    /// A signed-in user the rules let in.
    Allow,
    /// Nobody is signed in and the request needs someone.
    LoginRequired,
    /// Refused whoever asks, or refused to this user.
    Forbidden,
    /// The session store could not answer: refused, never treated as anonymous.
    Unavailable,
    /// sessiongate's own endpoints (sign-in, health, forward-auth, ...).
    OwnEndpoint,
    /// Refused before the gate: a malformed request, or no upstream to send it to.
    Invalid,
}

impl Outcome {
    /// Every outcome, in declaration order (metrics index their series by `as usize`).
    pub const ALL: [Outcome; 7] = [
        Outcome::Public,
        Outcome::Allow,
        Outcome::LoginRequired,
        Outcome::Forbidden,
        Outcome::Unavailable,
        Outcome::OwnEndpoint,
        Outcome::Invalid,
    ];

    /// The name the metrics and the access log give it.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Public => "public",
            Outcome::Allow => "allow",
            Outcome::LoginRequired => "login_required",
            Outcome::Forbidden => "forbidden",
            Outcome::Unavailable => "unavailable",
            Outcome::OwnEndpoint => "own_endpoint",
            Outcome::Invalid => "invalid",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_declaration_order() {
        for (i, outcome) in Outcome::ALL.iter().enumerate() {
            assert_eq!(*outcome as usize, i, "{outcome:?}");
        }
    }
}
