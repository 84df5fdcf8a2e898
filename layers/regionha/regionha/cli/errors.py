"""The AWS errors a user can fix, said in one line with what to do; and the wrapper that turns them
(and ``CommandError``) into exit 2."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from regionha.cli.output import CommandError, Out, one_line

if TYPE_CHECKING:
    from regionha.cli.target import Target

_ACCESS_DENIED = ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthorizationError",
                  "UnrecognizedClientException", "InvalidClientTokenId", "ExpiredToken", "ExpiredTokenException")


def code_of(e: Any) -> str:
    return str(getattr(e, "response", {}).get("Error", {}).get("Code", ""))


def message_of(e: Any) -> str:
    return str(getattr(e, "response", {}).get("Error", {}).get("Message", "")) or str(e)


def explain(e: BaseException, target: Target | None = None) -> str | None:
    """A clear one-line message for the AWS errors a user can fix, else None."""
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
        PartialCredentialsError,
        ProfileNotFound,
        SSOTokenLoadError,
        TokenRetrievalError,
        UnauthorizedSSOTokenError,
    )

    if isinstance(e, NoCredentialsError | PartialCredentialsError):
        return ("no AWS credentials found: run `aws configure` (or `aws sso login --profile NAME` and pass "
                "--profile NAME), or set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")
    if isinstance(e, SSOTokenLoadError | UnauthorizedSSOTokenError | TokenRetrievalError):
        return f"the SSO session has expired or is missing: run `aws sso login` ({e})"
    if isinstance(e, ProfileNotFound):
        return f"{e}; list your profiles with `aws configure list-profiles`"
    if isinstance(e, NoRegionError):
        return "no region: give --region, set AWS_REGION, or set a region in your profile"
    if isinstance(e, EndpointConnectionError):
        where = target.where if target else "AWS"
        return f"cannot reach {where}: {e}"
    if isinstance(e, ClientError):
        operation = getattr(e, "operation_name", "?")
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code_of(e) in _ACCESS_DENIED or status == 403:
            why = f"{code_of(e)}: {message_of(e)}" if code_of(e) in _ACCESS_DENIED else f"HTTP {status}"
            return (f"access denied: {operation} was refused ({one_line(why, 200)}); the credentials in use "
                    "need that permission (who they are: `aws sts get-caller-identity`)")
    return None


def guarded(prog: str, out: Out, body: Callable[[], int], target: Callable[[], Target | None] = lambda: None) -> int:
    """Run a command body; CommandError and the AWS errors a user can fix become exit 2 with a message."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return body()
    except CommandError as e:
        return out.error(prog, str(e))
    except (BotoCoreError, ClientError) as e:
        message = explain(e, target())
        if message is None:
            if isinstance(e, ClientError):
                message = f"{getattr(e, 'operation_name', 'AWS call')} failed: {code_of(e)}: {message_of(e)}"
            else:
                message = f"AWS call failed: {e}"
        return out.error(prog, message)
