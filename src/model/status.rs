//! The statuses and kinds the gateway's records carry, as enums: every
//! module names them here instead of spelling string literals. `as_str`
//! gives the stored (and API) spelling; `FromStr` reads it back.

use std::fmt;
use std::str::FromStr;

macro_rules! spelled {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(
                        "unknown {} `{other}` (expected {})",
                        stringify!($name),
                        [$($text),+].join(", ")
                    )),
                }
            }
        }
    };
}

spelled! {
    /// A side conversation's state.
    ScStatus {
        Open = "open",
        Closed = "closed",
    }
}

spelled! {
    /// Whom an open side conversation waits on (SPEC §15): the vendor after
    /// an agent's message, an agent after a vendor reply.
    Waiting {
        Vendor = "vendor",
        Agent = "agent",
    }
}

spelled! {
    /// A parent ticket's state, as the helpdesk syncs it.
    ParentStatus {
        Open = "open",
        Snoozed = "snoozed",
        Closed = "closed",
    }
}

spelled! {
    /// Which way a message went.
    Direction {
        In = "in",
        Out = "out",
    }
}

spelled! {
    /// What a message is (SPEC §7 `kind`).
    MessageKind {
        Reply = "reply",
        AutoReply = "auto_reply",
        Bounce = "bounce",
        Verification = "verification",
        ForwardingConfirmation = "forwarding_confirmation",
        /// An agent's message (start, follow-up) or a relayed portal reply.
        Agent = "agent",
        Notification = "notification",
        /// An agent's reply to a notification email that became a
        /// follow-up (SPEC §12); kept apart from the thread.
        AgentReply = "agent_reply",
        /// An agent's reply to a notification email that was not sent:
        /// kept with the unrouted mail, the agent told why.
        AgentReplyUnverified = "agent_reply_unverified",
    }
}

spelled! {
    /// How a message reached its place (SPEC §7 `route`).
    Route {
        Token = "token",
        References = "references",
        Forwarding = "forwarding",
        Bounce = "bounce",
        Unrouted = "unrouted",
        Api = "api",
        Portal = "portal",
    }
}

spelled! {
    /// How a participant joined a side conversation.
    ParticipantRole {
        To = "to",
        Cc = "cc",
        /// By a verified reply, or copied in by a verified participant.
        Joined = "joined",
        /// Admitted by an agent.
        Admitted = "admitted",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_round_trip() {
        for s in ScStatus::ALL {
            assert_eq!(s.as_str().parse::<ScStatus>(), Ok(*s));
        }
        for k in MessageKind::ALL {
            assert_eq!(k.as_str().parse::<MessageKind>(), Ok(*k));
        }
        for r in Route::ALL {
            assert_eq!(r.to_string().parse::<Route>(), Ok(*r));
        }
        assert!("opened".parse::<ScStatus>().is_err());
        assert_eq!("snoozed".parse::<ParentStatus>(), Ok(ParentStatus::Snoozed));
    }
}
