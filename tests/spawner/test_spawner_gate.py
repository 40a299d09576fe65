"""The group gate at spawn time, the spawn form, and a broken catalogue."""

from __future__ import annotations

import copy

import pytest
from tornado.web import HTTPError

from tests.helpers.spawner import CATALOGUE, make_spawner, obj, write_catalogue


async def refused(spawner) -> HTTPError:
    with pytest.raises(HTTPError) as e:
        await spawner.start()
    return e.value


async def test_another_groups_profile_is_refused_before_anything_is_written(ksim):
    spawner = make_spawner(ksim, "mallory", groups=["apex-small"], user_options={"profile": "large"})
    ksim.reset_log()
    error = await refused(spawner)
    assert error.status_code == 403
    assert "You may not use profile 'large'" in error.log_message
    assert "apex-large" not in error.log_message  # other groups are not revealed
    assert not [r for r in ksim.requests if r.verb in ("create", "patch", "update")]
    assert obj(ksim, "namespaces", "", "apex-mallory") is None


async def test_a_member_of_the_group_gets_the_profile(ksim):
    spawner = make_spawner(ksim, "nina", groups=["apex-large"], user_options={"profile": "large"})
    await spawner.start()
    pod = obj(ksim, "pods", "apex-nina", spawner.pod_name)
    assert pod["spec"]["containers"][0]["resources"]["limits"]["cpu"] == 4.0
    await spawner.stop()


@pytest.mark.parametrize(
    "options, status, words",
    [
        ({"profile": "lab", "image": "evil:latest"}, 403, "not accepted: image"),
        ({"profile": "lab", "kubespawner_override": {"privileged": True}}, 403, "kubespawner_override"),
        ({"profile": "nope"}, 400, "There is no profile 'nope'. Choose one of: lab."),
        ({"profile": ["lab"]}, 400, "must be a profile slug"),
    ],
)
async def test_tampered_user_options_are_refused(ksim, options, status, words):
    spawner = make_spawner(ksim, "oscar", user_options=options)
    error = await refused(spawner)
    assert error.status_code == status and words in error.log_message


async def test_no_profile_means_the_default_of_the_users_groups(ksim):
    catalogue = copy.deepcopy(CATALOGUE)
    catalogue["profiles"][0]["groups"] = ["apex-small"]
    catalogue["profiles"][0]["default"] = False
    catalogue["profiles"][1]["groups"] = []
    spawner = make_spawner(ksim, "pia", catalogue=catalogue)
    await spawner.start()
    assert spawner.profile.slug == "large"
    await spawner.stop()


async def test_a_user_with_no_profile_gets_a_friendly_message(ksim):
    catalogue = {"profiles": [{"slug": "only", "display_name": "Only", "groups": ["vip"]}]}
    spawner = make_spawner(ksim, "quinn", catalogue=catalogue)
    form = await spawner.options_form(spawner)
    assert "No server profile is available to you yet" in form
    error = await refused(spawner)
    assert error.status_code == 403 and "No server profile is available to you yet" in error.log_message


async def test_the_form_lists_only_the_users_profiles(ksim):
    outsider = make_spawner(ksim, "rita")
    form = await outsider.options_form(outsider)
    assert "JupyterLab" in form and "Large" not in form
    member = make_spawner(ksim, "sam", groups=["apex-large"])
    form = await member.options_form(member)
    assert "JupyterLab" in form and "Large" in form


async def test_a_switched_off_profile_cannot_start(ksim):
    catalogue = copy.deepcopy(CATALOGUE)
    catalogue["profiles"][0]["session_mode"] = "off"
    error = await refused(make_spawner(ksim, "tom", catalogue=catalogue))
    assert error.status_code == 403 and "switched off" in error.log_message


async def test_a_malformed_catalogue_is_a_clear_error_and_the_last_good_one_stays(ksim, tmp_path, caplog):
    path = tmp_path / "profiles.yml"
    path.write_text("profiles:\n  - slug: Bad Slug\n    display_name: x\n    cpu_limit: lots\n")
    error = await refused(make_spawner(ksim, "uma", catalogue=str(path)))
    assert error.status_code == 503 and "misconfigured" in error.log_message
    assert "profile 'Bad Slug': slug:" in caplog.text and "cpu_limit" in caplog.text

    write_catalogue(path, CATALOGUE)
    good = make_spawner(ksim, "uma", catalogue=str(path))
    await good.start()
    await good.stop()
    import os
    import time

    path.write_text("profiles: [\n")  # a broken edit while the hub runs
    os.utime(path, (time.time() + 5, time.time() + 5))
    again = make_spawner(ksim, "uma", catalogue=str(path))
    await again.start()  # served from the last good version
    assert again.profile.slug == "lab"
    assert "keeping the previous version" in caplog.text
    await again.stop()


async def test_an_oversized_configmap_is_refused_before_any_api_call(ksim, caplog):
    catalogue = copy.deepcopy(CATALOGUE)
    catalogue["profiles"][0]["config_maps"][0]["content"] = "x" * (1024 * 1024 + 1)
    ksim.reset_log()
    error = await refused(make_spawner(ksim, "vic", catalogue=catalogue))
    assert error.status_code == 503
    assert "over the Kubernetes limit of 1048576 bytes" in caplog.text
    assert not ksim.requests


async def test_the_next_profile_does_not_inherit_the_previous_ones_settings(ksim):
    catalogue = copy.deepcopy(CATALOGUE)
    catalogue["profiles"][1].update(
        {"node_selector": {"pool": "gpu"}, "kubespawner_override": {"extra_labels": {"tier": "large"}}}
    )
    spawner = make_spawner(
        ksim,
        "wanda",
        groups=["apex-large"],
        catalogue=catalogue,
        user_options={"profile": "large"},
        node_selector={"zone": "a"},
    )
    await spawner.start()
    pod = obj(ksim, "pods", "apex-wanda", spawner.pod_name)
    assert pod["spec"]["nodeSelector"] == {"zone": "a", "pool": "gpu"}
    assert pod["metadata"]["labels"]["tier"] == "large"
    await spawner.stop()
    spawner.user_options = {"profile": "lab"}  # the hub reuses the spawner object
    await spawner.start()
    pod = obj(ksim, "pods", "apex-wanda", spawner.pod_name)
    assert pod["spec"]["nodeSelector"] == {"zone": "a"}
    assert "tier" not in pod["metadata"]["labels"]
    assert pod["metadata"]["labels"]["apex.esa.int/profile"] == "lab"
    assert pod["spec"]["containers"][0]["resources"]["limits"]["cpu"] == 1.0
    await spawner.stop()
