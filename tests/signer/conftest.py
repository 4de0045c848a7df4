from tests.helpers_repo import keys, repo, session_keys, session_repo

__all__ = ["keys", "repo", "session_keys", "session_repo"]
