"""One settings mechanism for every service (pydantic-settings).

Each setting is a typed field. Its value is the command-line flag when one was given, else its
``STEERLAB_*`` variable, else the field's default; pydantic checks the type and the bounds.

- A field ``name`` of a :class:`SteerLabSettings` reads ``STEERLAB_<NAME>`` (``model`` reads
  ``STEERLAB_MODEL``, ``database_url`` reads ``STEERLAB_DATABASE_URL``).
- A service's ``server`` (a :class:`ServerSettings`) reads ``STEERLAB_<SERVICE>_HOST``,
  ``_PORT`` and ``_METRICS_PORT`` (``off`` disables /metrics), ``STEERLAB_MAX_MESSAGE_BYTES``
  ``STEERLAB_TOKEN``, ``STEERLAB_AUTH`` and ``STEERLAB_TLS_CERT``, ``_KEY``, ``_CLIENT_CA``;
  its ports default to the service's in :data:`DEFAULT_PORTS`.
- A nested field listed in ``nested_variables`` reads the variables named there.

``XxxSettings.from_env(**flags)`` builds one; a flag of None means "not given".
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from steerlab.auth.limits import LimitSettings
from steerlab.settings import DEFAULT_PORTS, SERVER_FLAGS

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class ServerSettings(BaseModel):
    """Where and how a service listens. Port 0 picks a free port; metrics_port None disables /metrics.

    With a ``token``, every call except health checks and reflection must carry it
    (``authorization: Bearer <token>``); see :mod:`steerlab.serving.auth`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = 50051
    metrics_port: int | None = 9464
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    token: str = Field(default="", repr=False)
    # none, token or keys (see steerlab.serving.auth); empty: token when a token is set, else none.
    auth: Literal["", "none", "token", "keys"] = ""
    # TLS: PEM files of the server's certificate chain and key; with a client CA, mutual TLS
    # (a client must present a certificate that CA signed). Empty: plaintext.
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    # A plaintext port that serves only grpc.health.v1, for probes that cannot speak TLS
    # (Kubernetes' gRPC probes); None: none.
    health_port: int | None = None
    # Per API key (--auth keys), in each replica; 0: no limit.
    key_requests_per_s: float = Field(default=0.0, ge=0)
    key_request_burst: float = Field(default=0.0, ge=0)
    key_tokens_per_minute: float = Field(default=0.0, ge=0)

    @property
    def limits(self) -> LimitSettings:
        return LimitSettings(self.key_requests_per_s, self.key_request_burst, self.key_tokens_per_minute)

    @property
    def auth_mode(self) -> str:
        return self.auth or ("token" if self.token else "none")

    @model_validator(mode="after")
    def _complete(self) -> Self:
        if self.auth_mode == "token" and not self.token:
            raise ValueError("--auth token needs a token: set STEERLAB_TOKEN")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("TLS needs both a certificate and its key (--tls-cert and --tls-key)")
        if self.tls_client_ca and not self.tls_cert:
            raise ValueError("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key")
        return self

    @field_validator("port", "metrics_port", "health_port")
    @classmethod
    def _a_port(cls, port: int | None) -> int | None:
        if port is not None and not 0 <= port <= 65535:
            raise ValueError(f"port must be within 0..65535, got {port}")
        return port

    @field_validator("max_message_bytes")
    @classmethod
    def _a_message_limit(cls, limit: int) -> int:
        if limit < 1024:
            raise ValueError(f"max message size must be at least 1024 bytes, got {limit}")
        return limit


def server_variables(service: str) -> dict[str, str]:
    """The variable each :class:`ServerSettings` field of ``service`` reads."""
    prefix = f"STEERLAB_{service.upper()}_"
    return {
        "host": prefix + "HOST",
        "port": prefix + "PORT",
        "metrics_port": prefix + "METRICS_PORT",
        "health_port": prefix + "HEALTH_PORT",
        "max_message_bytes": "STEERLAB_MAX_MESSAGE_BYTES",
        "token": "STEERLAB_TOKEN",
        "auth": "STEERLAB_AUTH",
        "tls_cert": "STEERLAB_TLS_CERT",
        "tls_key": "STEERLAB_TLS_KEY",
        "tls_client_ca": "STEERLAB_TLS_CLIENT_CA",
        "key_requests_per_s": "STEERLAB_KEY_REQUESTS_PER_S",
        "key_request_burst": "STEERLAB_KEY_REQUEST_BURST",
        "key_tokens_per_minute": "STEERLAB_KEY_TOKENS_PER_MINUTE",
    }


class SteerLabSettings(BaseSettings):
    """Base of every service's settings; see the module's docstring for where values come from."""

    model_config = SettingsConfigDict(
        env_prefix="STEERLAB_", env_ignore_empty=True, frozen=True, extra="forbid"
    )

    # The service whose STEERLAB_<SERVICE>_* variables and default ports fill ``server``.
    service: ClassVar[str] = ""
    # Nested fields read from named variables: {field: {nested field: variable}}.
    nested_variables: ClassVar[Mapping[str, Mapping[str, str]]] = {}

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, _NestedVariables(settings_cls), env_settings

    @classmethod
    def variables(cls) -> dict[str, Mapping[str, str]]:
        """Every nested field's variables, the server's included."""
        nested = dict(cls.nested_variables)
        if cls.service:
            nested["server"] = server_variables(cls.service)
        return nested

    @classmethod
    def from_env(cls, **flags: Any) -> Self:
        """The settings from the flags given (None: not given), else ``STEERLAB_*``, else defaults.

        The flags of :data:`SERVER_FLAGS` are the server's. A value of the wrong type is a
        ``ValueError`` that names its variable.
        """
        given = {name: value for name, value in flags.items() if value is not None}
        server = {name: given.pop(name) for name in SERVER_FLAGS if name in given}
        if server:
            given["server"] = server  # merged over the server's variables, not instead of them
        try:
            return cls(**given)
        except ValidationError as exc:
            raise ValueError(cls._explain(exc)) from None

    @classmethod
    def _explain(cls, exc: ValidationError) -> str:
        reasons = []
        for error in exc.errors():
            path = [str(part) for part in error["loc"]]
            variable = cls._variable(path)
            # argparse types the flags, so a value that does not parse came from a variable.
            if error["type"] in ("int_parsing", "int_from_float"):
                reasons.append(f"{variable} must be an integer, got {error['input']!r}")
            elif error["type"] == "float_parsing":
                reasons.append(f"{variable} must be a number, got {error['input']!r}")
            elif path:
                reasons.append(f"{'.'.join(path)} ({variable}): {error['msg']}")
            else:
                reasons.append(str(error["msg"]))
        return "; ".join(reasons)

    @classmethod
    def _variable(cls, path: list[str]) -> str:
        """The variable a field (``["port"]``, or nested: ``["server", "port"]``) reads."""
        if not path:
            return ""
        if len(path) == 1:
            return f"STEERLAB_{path[0].upper()}"
        return cls.variables().get(path[0], {}).get(path[1], "")


class _NestedVariables(PydanticBaseSettingsSource):
    """The nested fields' variables (and a service's default ports), as nested dictionaries."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # everything happens in __call__

    def __call__(self) -> dict[str, Any]:
        settings_cls: Any = self.settings_cls
        values: dict[str, Any] = {}
        for field, variables in settings_cls.variables().items():
            nested = {name: os.environ[v] for name, v in variables.items() if os.environ.get(v)}
            values[field] = nested
        if settings_cls.service:
            ports = DEFAULT_PORTS[settings_cls.service]
            server = {"port": ports.grpc, "metrics_port": ports.metrics, **values["server"]}
            if server["metrics_port"] == "off":
                server["metrics_port"] = None
            values["server"] = server
        return {field: nested for field, nested in values.items() if nested}
