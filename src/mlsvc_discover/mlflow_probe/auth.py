"""Credentials for MLflow servers: a bearer token, or basic auth.

Public seam: :class:`MlflowAuth` (config model; ``authorization()`` gives the header value,
``secret_values()`` the strings to redact), :func:`basic_authorization`, and
:data:`SECRET_SAFE` (model config that keeps pydantic from echoing secrets in errors).
"""

from __future__ import annotations

import base64

from pydantic import ConfigDict, Field, SecretStr, model_validator

from mlsvc_discover.discoverers.base import StrictModel

__all__ = ["SECRET_SAFE", "MlflowAuth", "basic_authorization"]

# Secrets reach these models; pydantic must not echo raw input values into error messages.
SECRET_SAFE = ConfigDict(hide_input_in_errors=True)


class MlflowAuth(StrictModel):
    """Credentials for MLflow servers: a bearer token, or a user name and password (basic auth)."""

    model_config = SECRET_SAFE

    token: SecretStr | None = Field(default=None, description="Bearer token, e.g. `${MLFLOW_TRACKING_TOKEN}`.")
    username: str | None = Field(default=None, description="User name for HTTP basic auth (with `password`).")
    password: SecretStr | None = Field(
        default=None, description="Password for HTTP basic auth, e.g. `${MLFLOW_TRACKING_PASSWORD}`."
    )

    @model_validator(mode="after")
    def _one_scheme(self) -> MlflowAuth:
        token = self.token.get_secret_value() if self.token is not None else None
        password = self.password.get_secret_value() if self.password is not None else None
        if token is not None and (self.username is not None or password is not None):
            raise ValueError("set either token, or username and password, not both")
        if token is not None:
            if not token:
                raise ValueError("token is empty; is its environment variable set?")
            return self
        if self.username is None and password is None:
            raise ValueError("set token, or username and password")
        if not self.username or not password:
            raise ValueError("username and password go together; set both (non-empty) or use token")
        return self

    def authorization(self) -> str:
        """The ``Authorization`` header value these credentials produce."""
        if self.token is not None:
            return f"Bearer {self.token.get_secret_value()}"
        assert self.password is not None  # guaranteed by the validator
        return basic_authorization(self.username or "", self.password.get_secret_value())

    def secret_values(self) -> list[str]:
        return [s.get_secret_value() for s in (self.token, self.password) if s is not None]


def basic_authorization(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
