//! The DStream engine: StreamingContext, operators, scheduler, receiver supervision.
