"""Issue 13.2 and 13.7 (spawner side): what the Z2JH 4.4 chart writes into ``c.KubeSpawner``
must not empty the profile form or override a profile's resources."""

from __future__ import annotations

from tests.helpers.spawner import CATALOGUE, make_spawner, obj

#: What Z2JH 4.4's jupyterhub_config.py sets from its default values (the keys that matter here).
CHART = {"profile_list": [], "mem_guarantee": "1G", "cpu_guarantee": None}


async def test_the_charts_empty_profile_list_does_not_empty_the_form(ksim):
    spawner = make_spawner(ksim, "ada", groups=["apex-large"], kubespawner=CHART)
    form = spawner.options_form
    assert callable(form)
    html = await form(spawner)
    assert "JupyterLab" in html and "Large" in html
    spawner.user_options = {"profile": "large"}
    await spawner.start()
    assert spawner.profile.slug == "large"
    await spawner.stop()


async def test_an_operators_profile_list_is_ignored_with_a_warning(ksim, caplog, monkeypatch):
    from apex_hub.spawner import APExSpawner

    monkeypatch.setattr(APExSpawner, "_warned_profile_list", False)
    listed = [{"display_name": "Chart profile", "slug": "chart", "kubespawner_override": {"image": "evil"}}]
    spawner = make_spawner(ksim, "bea", kubespawner={"profile_list": listed})
    assert (
        "KubeSpawner.profile_list is set (singleuser.profileList in the Z2JH chart) but is ignored"
        in caplog.text
    )
    html = await spawner.options_form(spawner)
    assert "Chart profile" not in html and "JupyterLab" in html


async def test_a_profiles_resources_win_over_the_charts_guarantee(ksim):
    catalogue = {
        "profiles": [
            {"slug": "small", "display_name": "Small", "default": True, "mem_limit": "512M", "cpu_limit": 1},
            {"slug": "bare", "display_name": "Bare"},
        ]
    }
    spawner = make_spawner(ksim, "cleo", catalogue=catalogue, kubespawner=CHART)
    await spawner.start()
    resources = obj(ksim, "pods", "apex-cleo", spawner.pod_name)["spec"]["containers"][0]["resources"]
    # the profile set a 512M limit and no guarantee: not the chart's 1G (which would exceed it)
    assert resources["limits"]["memory"] == 512 * 1024**2
    assert "memory" not in (resources.get("requests") or {})
    await spawner.stop()
    spawner.user_options = {"profile": "bare"}  # sets no resources: the operator's values apply
    await spawner.start()
    resources = obj(ksim, "pods", "apex-cleo", spawner.pod_name)["spec"]["containers"][0]["resources"]
    assert resources["requests"]["memory"] == 1024**3
    await spawner.stop()


async def test_the_catalogue_defaults_are_the_place_for_shared_resources(ksim):
    spawner = make_spawner(ksim, "dina", catalogue=CATALOGUE, kubespawner=CHART)
    await spawner.start()
    resources = obj(ksim, "pods", "apex-dina", spawner.pod_name)["spec"]["containers"][0]["resources"]
    assert resources["requests"]["memory"] == 256 * 1024**2  # catalogue defaults, not the chart's 1G
    await spawner.stop()
