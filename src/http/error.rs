//! The one error type of the HTTP edge: logs the detail, answers plainly with JSON.

use crate::detector::DetectorError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use lumacast_rtc::RtcError;

/// Every failure a handler can answer with. Never a panic, never an error inside a 200.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed request: bad JSON, garbage SDP, wrong field types (400).
    #[error("{0}")]
    BadRequest(String),
    /// A stream parameter with a bad value (400, naming the field).
    #[error(transparent)]
    Param(#[from] crate::params::ParamError),
    /// A pushed frame that does not match its header, or another bad body (400).
    #[error("{0}")]
    BadFrame(String),
    /// The endpoint exists, but not for this detector (409), e.g. pushing frames to a
    /// synthetic detector.
    #[error("{0}")]
    Conflict(String),
    /// No or a bad bearer token (401).
    #[error("{0}")]
    Unauthorized(String),
    /// Unknown detector or viewer (404).
    #[error("{0}")]
    NotFound(String),
    /// Well-formed but unanswerable offer: no video, no H.264 (422).
    #[error("{0}")]
    Unprocessable(String),
    /// The detector cannot start (503).
    #[error("{0}")]
    Unavailable(String),
    /// A viewer limit is reached (503 with `Retry-After`).
    #[error("{0}")]
    Busy(String),
    /// This client sends offers too fast (429 with `Retry-After`).
    #[error("{0}")]
    TooManyRequests(String),
    /// The request body is over the limit (413).
    #[error("{0}")]
    TooLarge(String),
    /// A known endpoint whose feature this server does not have yet (501).
    #[error("{0}")]
    NotImplemented(String),
    /// A fault of ours (500).
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::Param(_) | ApiError::BadFrame(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) | ApiError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = %self, "request failed");
        } else {
            tracing::info!(status = status.as_u16(), error = %self, "request rejected");
        }
        let mut body = serde_json::json!({"status": "error", "message": self.to_string()});
        if let ApiError::Param(p) = &self {
            body["field"] = p.field.clone().into();
        }
        let retry_after = match &self {
            ApiError::Busy(_) => Some("5"),
            ApiError::TooManyRequests(_) => Some("1"),
            _ => None,
        };
        let mut r = (status, Json(body)).into_response();
        if let Some(s) = retry_after {
            r.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static(s),
            );
        }
        r
    }
}

impl From<DetectorError> for ApiError {
    fn from(e: DetectorError) -> Self {
        match e {
            DetectorError::Unknown(_) | DetectorError::NoneConfigured => {
                ApiError::NotFound(e.to_string())
            }
            DetectorError::AlreadyRunning(_) => ApiError::Conflict(e.to_string()),
            DetectorError::Start { .. } | DetectorError::Thread { .. } => {
                ApiError::Unavailable(e.to_string())
            }
        }
    }
}

impl From<RtcError> for ApiError {
    fn from(e: RtcError) -> Self {
        match e {
            RtcError::BadSdp(_) => ApiError::BadRequest(e.to_string()),
            RtcError::NoVideo | RtcError::NoH264(_) | RtcError::Unanswerable(_) => {
                ApiError::Unprocessable(e.to_string())
            }
            RtcError::NoSession(_) => ApiError::NotFound(e.to_string()),
            RtcError::IceRestart => ApiError::Unprocessable(e.to_string()),
            RtcError::BadFragment(_) => ApiError::BadRequest(e.to_string()),
            RtcError::TooManyViewers(_) => ApiError::Busy(e.to_string()),
            RtcError::SourceStopped => ApiError::Unavailable(e.to_string()),
            RtcError::WebRtc { .. } | RtcError::Config(_) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        ApiError::Internal(format!("background task failed: {e}"))
    }
}
