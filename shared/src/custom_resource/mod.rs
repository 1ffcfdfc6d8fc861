//! The CloudFormation custom-resource protocol, owned in one place (as crhelper does for
//! Python): every custom resource of the suite answers through [`Responder`], and no function
//! talks to the `ResponseURL` itself.
//!
//! The rules it keeps:
//! - it always answers, SUCCESS or FAILED: on a handler error, a handler panic, bad
//!   properties, a malformed request, and when the Lambda deadline approaches (the handler is
//!   cancelled and FAILED is sent [`Responder::with_deadline_margin`] before the deadline);
//! - the response is PUT with an empty content type and retried on connection errors, 429
//!   and 5xx, within the deadline;
//! - the body stays within 4096 bytes: `Reason` is truncated, `Data` is never cut silently;
//! - property values arrive as strings (`"300"`, `"true"`): see [`lenient`];
//! - a Create that fails answers with a recognisable physical id, so the Delete
//!   CloudFormation sends while rolling it back succeeds without touching anything;
//! - the physical id stays stable: a Create without one of its own gets
//!   `<LogicalResourceId>-<RequestId>` (the same when the same request is retried), Update and
//!   Delete keep the current one unless the handler names a replacement.

mod delivery;
pub mod lenient;
mod request;
mod responder;
mod response;

pub use delivery::DeliveryError;
pub use request::{Request, RequestType};
pub use responder::{Answered, CustomResource, Responder, ResponderError};
pub use response::{MAX_PHYSICAL_ID_BYTES, MAX_RESPONSE_BYTES, Outcome, Status};

/// Physical ids of resources whose Create failed start with this; a Delete for one is a no-op.
pub const CREATE_FAILED_PREFIX: &str = "create-failed:";
