"""The group gate: the form shows only the user's profiles, and spawn re-checks."""

import pytest

from apex_hub.profiles import (
    Catalogue,
    NoProfileAvailable,
    ProfileError,
    ProfileNotAllowed,
    UnknownProfile,
)

CATALOGUE = Catalogue.from_dict(
    {
        "profiles": [
            {"slug": "open", "display_name": "Open to all"},
            {"slug": "small", "display_name": "Small", "groups": ["apex-small", "apex-large"]},
            {"slug": "large", "display_name": "Large", "groups": ["apex-large"], "default": True},
            {"slug": "secret-gpu", "display_name": "GPU", "groups": ["apex-gpu"]},
        ]
    }
)


def slugs(profiles):
    return [p.slug for p in profiles]


def test_for_groups_keeps_file_order():
    assert slugs(CATALOGUE.for_groups([])) == ["open"]
    assert slugs(CATALOGUE.for_groups(["apex-small"])) == ["open", "small"]
    assert slugs(CATALOGUE.for_groups(["apex-large"])) == ["open", "small", "large"]
    assert slugs(CATALOGUE.for_groups(("apex-gpu", "apex-small"))) == ["open", "small", "secret-gpu"]
    assert slugs(CATALOGUE.for_groups(iter(["other"]))) == ["open"]


def test_authorize_allows_member():
    assert CATALOGUE.authorize("large", ["apex-large"]).slug == "large"
    assert CATALOGUE.authorize("open", []).slug == "open"
    assert CATALOGUE.authorize("small", {"apex-large", "x"}).slug == "small"


def test_authorize_refuses_other_groups_profile():
    with pytest.raises(ProfileNotAllowed) as info:
        CATALOGUE.authorize("secret-gpu", ["apex-small"])
    error = info.value
    message = str(error)
    assert "'secret-gpu'" in message
    assert "your groups do not include any of the groups this profile is restricted to" in message
    # other profiles and groups are not revealed to the user
    for hidden in ("large", "apex-gpu", "apex-large"):
        assert hidden not in message
    assert error.status_code == 403
    assert error.required_groups == ["apex-gpu"] and error.user_groups == ["apex-small"]
    assert isinstance(error, PermissionError) and isinstance(error, ProfileError)


def test_authorize_unknown_profile_lists_only_visible_ones():
    with pytest.raises(UnknownProfile) as info:
        CATALOGUE.authorize("nope", ["apex-small"])
    message = str(info.value)
    assert "There is no profile 'nope'" in message
    assert "open, small" in message
    assert "large" not in message and "secret-gpu" not in message
    assert info.value.status_code == 400
    assert isinstance(info.value, LookupError)


def test_get_unknown():
    with pytest.raises(UnknownProfile, match="no profile 'nope'"):
        CATALOGUE.get("nope")
    assert CATALOGUE.get("small").display_name == "Small"


def test_default_is_per_user():
    assert CATALOGUE.default_for(["apex-large"]).slug == "large"
    assert CATALOGUE.default_for(["apex-small"]).slug == "open"  # first visible
    assert CATALOGUE.authorize("", ["apex-large"]).slug == "large"
    assert CATALOGUE.authorize(None, []).slug == "open"


def test_no_profile_available():
    gated = Catalogue.from_dict({"profiles": [{"slug": "a", "display_name": "A", "groups": ["g"]}]})
    assert gated.for_groups(["h"]) == []
    assert gated.default_for(["h"]) is None
    with pytest.raises(NoProfileAvailable) as info:
        gated.authorize(None, ["h"])
    assert "No server profile is available to you" in str(info.value)
    assert info.value.status_code == 403
    with pytest.raises(ProfileNotAllowed):
        gated.authorize("a", [])


def test_empty_catalogue():
    empty = Catalogue.from_dict({"profiles": []})
    assert len(empty) == 0 and empty.for_groups(["x"]) == []
