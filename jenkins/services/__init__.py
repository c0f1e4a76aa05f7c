"""Every write that matters on Jenkins servers, jobs, builds and API tokens goes through here."""

from jenkins.services.builds import (
    PollOutcome,
    TriggerOutcome,
    jenkins_build_cancel,
    jenkins_build_create,
    jenkins_build_poll,
    jenkins_build_trigger,
    jenkins_builds_lost,
)
from jenkins.services.callbacks import (
    callback_url_check,
    run_callback_create,
    run_callback_deliver,
    run_callbacks_claim_due,
)
from jenkins.services.servers import (
    ServerCheckResult,
    jenkins_job_create,
    jenkins_job_delete,
    jenkins_job_update,
    jenkins_server_check,
    jenkins_server_create,
    jenkins_server_delete,
    jenkins_server_update,
)
from jenkins.services.tokens import (
    api_token_create,
    api_token_mark_used,
    api_token_revoke,
    token_hash,
)

__all__ = [
    "PollOutcome",
    "ServerCheckResult",
    "TriggerOutcome",
    "api_token_create",
    "api_token_mark_used",
    "api_token_revoke",
    "callback_url_check",
    "jenkins_build_cancel",
    "jenkins_build_create",
    "jenkins_build_poll",
    "jenkins_build_trigger",
    "jenkins_builds_lost",
    "jenkins_job_create",
    "jenkins_job_delete",
    "jenkins_job_update",
    "jenkins_server_check",
    "jenkins_server_create",
    "jenkins_server_delete",
    "jenkins_server_update",
    "run_callback_create",
    "run_callback_deliver",
    "run_callbacks_claim_due",
    "token_hash",
]
