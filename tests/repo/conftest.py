from tests.helpers_repo import keys, live, repo, session_keys, session_repo

__all__ = ["keys", "live", "repo", "session_keys", "session_repo"]
