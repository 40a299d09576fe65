"""The PATCH flavours: merge, JSON, strategic merge and apply; results are new objects, inputs untouched."""

import copy

import pytest

from apex_hub.kubesim.patch import (
    APPLY_PATCH,
    JSON_PATCH,
    MERGE_PATCH,
    STRATEGIC_MERGE_PATCH,
    PatchError,
    apply_by_content_type,
    apply_patch,
    json_patch,
    merge_patch,
    strategic_merge_patch,
)


def pure(fn, target, patch, *args):
    """Call ``fn`` and check that neither input was mutated nor shared with the result."""
    target_before, patch_before = copy.deepcopy(target), copy.deepcopy(patch)
    result = fn(target, patch, *args)
    assert target == target_before and patch == patch_before
    returned = copy.deepcopy(result)
    if isinstance(result, (dict, list)):
        mutate(result)
        assert target == target_before and patch == patch_before
    return returned


def mutate(value):
    """Scribble over every container in ``value`` to expose shared sub-objects."""
    if isinstance(value, dict):
        for v in list(value.values()):
            mutate(v)
        value["__scribbled__"] = True
    elif isinstance(value, list):
        for v in value:
            mutate(v)
        value.append("__scribbled__")


def test_content_type_constants():
    assert MERGE_PATCH == "application/merge-patch+json"
    assert JSON_PATCH == "application/json-patch+json"
    assert STRATEGIC_MERGE_PATCH == "application/strategic-merge-patch+json"
    assert APPLY_PATCH == "application/apply-patch+yaml"


def test_patch_error_carries_code_and_message():
    err = PatchError(422, "boom")
    assert isinstance(err, ValueError)
    assert err.code == 422 and err.message == "boom" and str(err) == "boom"


# --- merge patch ---


@pytest.mark.parametrize(
    "target, patch, expected",
    [  # RFC 7386 appendix A, plus k8s shapes
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        (["a", "b"], ["c", "d"], ["c", "d"]),
        ({"a": "b"}, ["c"], ["c"]),
        ({"a": "foo"}, None, None),
        ({"a": "foo"}, "bar", "bar"),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
        (
            {"metadata": {"labels": {"a": "1", "b": "2"}}},
            {"metadata": {"labels": {"a": None, "c": "3"}}},
            {"metadata": {"labels": {"b": "2", "c": "3"}}},
        ),
    ],
)
def test_merge_patch(target, patch, expected):
    assert pure(merge_patch, target, patch) == expected


# --- JSON patch ---

DOC = {"metadata": {"name": "p", "labels": {"a/b": "1", "m~n": "2"}}, "list": [1, 2, 3], "flag": True}


@pytest.mark.parametrize(
    "ops, expected",
    [
        ([], DOC),
        (
            [{"op": "add", "path": "/metadata/labels/c", "value": "3"}],
            {**DOC, "metadata": {"name": "p", "labels": {"a/b": "1", "m~n": "2", "c": "3"}}},
        ),
        ([{"op": "add", "path": "/list/1", "value": 9}], {**DOC, "list": [1, 9, 2, 3]}),
        ([{"op": "add", "path": "/list/3", "value": 9}], {**DOC, "list": [1, 2, 3, 9]}),
        ([{"op": "add", "path": "/list/-", "value": [9]}], {**DOC, "list": [1, 2, 3, [9]]}),
        ([{"op": "add", "path": "/flag", "value": False}], {**DOC, "flag": False}),
        ([{"op": "add", "path": "", "value": {"x": 1}}], {"x": 1}),
        (
            [{"op": "remove", "path": "/metadata/labels/a~1b"}],
            {**DOC, "metadata": {"name": "p", "labels": {"m~n": "2"}}},
        ),
        (
            [{"op": "remove", "path": "/metadata/labels/m~0n"}],
            {**DOC, "metadata": {"name": "p", "labels": {"a/b": "1"}}},
        ),
        ([{"op": "remove", "path": "/list/0"}], {**DOC, "list": [2, 3]}),
        ([{"op": "replace", "path": "/list/2", "value": 0}], {**DOC, "list": [1, 2, 0]}),
        (
            [{"op": "replace", "path": "/metadata/name", "value": "q"}],
            {**DOC, "metadata": {**DOC["metadata"], "name": "q"}},
        ),
        ([{"op": "replace", "path": "", "value": [1]}], [1]),
        ([{"op": "move", "from": "/list/0", "path": "/list/-"}], {**DOC, "list": [2, 3, 1]}),
        (
            [{"op": "move", "from": "/flag", "path": "/metadata/flag"}],
            {"metadata": {**DOC["metadata"], "flag": True}, "list": [1, 2, 3]},
        ),
        ([{"op": "move", "from": "/flag", "path": "/flag"}], DOC),
        (
            [{"op": "copy", "from": "/metadata/labels", "path": "/labels"}],
            {**DOC, "labels": DOC["metadata"]["labels"]},
        ),
        (
            [
                {"op": "test", "path": "/metadata/name", "value": "p"},
                {"op": "test", "path": "/list", "value": [1, 2, 3.0]},
                {"op": "test", "path": "/flag", "value": True},
                {"op": "replace", "path": "/metadata/name", "value": "q"},
            ],
            {**DOC, "metadata": {**DOC["metadata"], "name": "q"}},
        ),
        ([{"op": "test", "path": "", "value": DOC}], DOC),
    ],
)
def test_json_patch(ops, expected):
    assert pure(json_patch, DOC, ops) == expected


def test_json_patch_copy_makes_independent_values():
    result = json_patch({"a": {"b": 1}}, [{"op": "copy", "from": "/a", "path": "/c"}])
    result["c"]["b"] = 2
    assert result["a"] == {"b": 1}


def test_json_patch_is_all_or_nothing():
    target = {"a": 1}
    with pytest.raises(PatchError):
        json_patch(target, [{"op": "replace", "path": "/a", "value": 2}, {"op": "remove", "path": "/nope"}])
    assert target == {"a": 1}


@pytest.mark.parametrize(
    "ops, message",
    [
        (
            [{"op": "test", "path": "/metadata/name", "value": "x"}],
            'json patch "test" at "/metadata/name": test failed: value is "p", expected "x"',
        ),
        ([{"op": "test", "path": "/flag", "value": 1}], 'json patch "test" at "/flag": test failed'),
        ([{"op": "test", "path": "/list/0", "value": True}], 'json patch "test" at "/list/0": test failed'),
        ([{"op": "test", "path": "/nope", "value": 1}], 'json patch "test" at "/nope": path not found'),
        (
            [{"op": "remove", "path": "/metadata/nope"}],
            'json patch "remove" at "/metadata/nope": path not found',
        ),
        ([{"op": "remove", "path": "/list/3"}], 'json patch "remove" at "/list/3": path not found'),
        ([{"op": "remove", "path": "/list/-"}], 'json patch "remove" at "/list/-": path not found'),
        ([{"op": "remove", "path": ""}], 'json patch "remove" at "": cannot remove the whole document'),
        ([{"op": "replace", "path": "/nope", "value": 1}], 'json patch "replace" at "/nope": path not found'),
        (
            [{"op": "replace", "path": "/list/01", "value": 1}],
            'json patch "replace" at "/list/01": path not found',
        ),
        ([{"op": "add", "path": "/nope/x", "value": 1}], 'json patch "add" at "/nope/x": path not found'),
        (
            [{"op": "add", "path": "/list/4", "value": 1}],
            'json patch "add" at "/list/4": array index \'4\' is out of range (length 3)',
        ),
        ([{"op": "add", "path": "/list/x", "value": 1}], 'json patch "add" at "/list/x": array index \'x\''),
        ([{"op": "add", "path": "/flag/x", "value": 1}], 'json patch "add" at "/flag/x": path not found'),
        ([{"op": "move", "from": "/nope", "path": "/x"}], 'json patch "move" at "/x": path not found'),
        (
            [{"op": "move", "from": "/metadata", "path": "/metadata/x"}],
            'json patch "move" at "/metadata/x": cannot move "/metadata" into one of its own children',
        ),
        ([{"op": "copy", "from": "/nope", "path": "/x"}], 'json patch "copy" at "/x": path not found'),
    ],
)
def test_json_patch_failures_are_422(ops, message):
    with pytest.raises(PatchError) as info:
        pure(json_patch, DOC, ops)
    assert info.value.code == 422
    assert message in str(info.value)


@pytest.mark.parametrize(
    "ops, message",
    [
        (
            {"op": "add", "path": "/a", "value": 1},
            "json patch body must be a JSON array of operations, got dict",
        ),
        (None, "must be a JSON array of operations, got NoneType"),
        (["add"], "json patch operation #0 must be an object"),
        ([{"path": "/a"}], "json patch operation #0: unknown op None"),
        ([{"op": "frobnicate", "path": "/a"}], "json patch operation #0: unknown op 'frobnicate'"),
        ([{"op": "add", "value": 1}], 'json patch "add" (operation #0): missing "path"'),
        ([{"op": "add", "path": "/a"}], 'json patch "add" at "/a": missing "value"'),
        ([{"op": "test", "path": "/a"}], 'json patch "test" at "/a": missing "value"'),
        ([{"op": "move", "path": "/a"}], 'json patch "move" at "/a": missing "from"'),
        ([{"op": "remove", "path": "a"}], "'a' is not a JSON pointer (must be empty or start with '/')"),
        ([{"op": "remove", "path": 3}], "3 is not a JSON pointer"),
        ([{"op": "copy", "from": "x", "path": "/a"}], "'x' is not a JSON pointer"),
        ([{"op": "remove", "path": "/a~2b"}], "invalid escape in JSON pointer '/a~2b'"),
        (
            [{"op": "remove", "path": "/flag"}, {"op": "bogus", "path": "/"}],
            "operation #1: unknown op 'bogus'",
        ),
    ],
)
def test_malformed_json_patch_is_400(ops, message):
    with pytest.raises(PatchError) as info:
        json_patch(copy.deepcopy(DOC), ops)
    assert info.value.code == 400
    assert message in str(info.value)


# --- strategic merge patch ---

POD = {
    "metadata": {
        "name": "jupyter-alice",
        "labels": {"app": "jupyterhub", "component": "singleuser-server"},
        "finalizers": ["a", "b"],
        "ownerReferences": [{"uid": "u1", "kind": "ReplicaSet", "name": "rs"}],
    },
    "spec": {
        "containers": [
            {
                "name": "notebook",
                "image": "jupyter:1",
                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                "ports": [{"containerPort": 8888, "name": "http"}],
                "volumeMounts": [{"name": "home", "mountPath": "/home/jovyan"}],
                "args": ["start", "--debug"],
            },
            {"name": "sidecar", "image": "side:1"},
        ],
        "volumes": [{"name": "home", "persistentVolumeClaim": {"claimName": "claim-alice"}}],
        "tolerations": [{"key": "hub.jupyter.org/dedicated", "operator": "Equal", "value": "user"}],
        "nodeSelector": {"disk": "ssd", "zone": "a"},
    },
    "status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "Scheduled", "status": "True"}]},
}


def smp(patch, target=POD):
    return pure(strategic_merge_patch, target, patch)


def test_smp_merges_maps_and_deletes_nulls():
    out = smp(
        {"metadata": {"labels": {"component": None, "x": "y"}, "annotations": {"n": "v", "gone": None}}}
    )
    assert out["metadata"]["labels"] == {"app": "jupyterhub", "x": "y"}
    assert out["metadata"]["annotations"] == {"n": "v"}
    assert out["spec"] == POD["spec"]


def test_smp_merges_containers_by_name_at_any_depth():
    patch = {"spec": {"containers": [{"name": "sidecar", "image": "side:2"}, {"name": "new", "image": "n"}]}}
    out = smp(patch)
    assert [c["name"] for c in out["spec"]["containers"]] == ["notebook", "sidecar", "new"]
    assert out["spec"]["containers"][0] == POD["spec"]["containers"][0]
    assert out["spec"]["containers"][1] == {"name": "sidecar", "image": "side:2"}
    deployment = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [{"name": "a", "image": "1"}],
                    "initContainers": [{"name": "i", "image": "1"}],
                }
            }
        }
    }
    out = smp(
        {
            "spec": {
                "template": {
                    "spec": {
                        "containers": [{"name": "a", "image": "2"}],
                        "initContainers": [{"name": "j", "image": "1"}],
                    }
                }
            }
        },
        deployment,
    )
    assert out["spec"]["template"]["spec"]["containers"] == [{"name": "a", "image": "2"}]
    assert [c["name"] for c in out["spec"]["template"]["spec"]["initContainers"]] == ["i", "j"]


def test_smp_merges_nested_lists_by_their_keys():
    patch = {
        "spec": {
            "containers": [
                {
                    "name": "notebook",
                    "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}],
                    "ports": [{"containerPort": 8888, "protocol": "TCP"}, {"containerPort": 9000}],
                    "volumeMounts": [
                        {"mountPath": "/home/jovyan", "readOnly": True},
                        {"name": "tmp", "mountPath": "/tmp"},
                    ],
                    "args": ["other"],
                }
            ]
        }
    }
    c = smp(patch)["spec"]["containers"][0]
    assert c["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "3"}, {"name": "C", "value": "4"}]
    assert c["ports"] == [{"containerPort": 8888, "name": "http", "protocol": "TCP"}, {"containerPort": 9000}]
    assert c["volumeMounts"] == [
        {"name": "home", "mountPath": "/home/jovyan", "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    assert c["args"] == ["other"]  # unknown lists are replaced


@pytest.mark.parametrize(
    "field, patch_value, expected",
    [
        (
            "volumes",
            [{"name": "scratch", "emptyDir": {}}],
            [
                {"name": "home", "persistentVolumeClaim": {"claimName": "claim-alice"}},
                {"name": "scratch", "emptyDir": {}},
            ],
        ),
        ("imagePullSecrets", [{"name": "reg"}], [{"name": "reg"}]),
        (
            "ephemeralContainers",
            [{"name": "debug", "image": "busybox"}],
            [{"name": "debug", "image": "busybox"}],
        ),
        ("tolerations", [{"key": "other", "operator": "Exists"}], [{"key": "other", "operator": "Exists"}]),
    ],
)
def test_smp_spec_lists(field, patch_value, expected):
    assert smp({"spec": {field: patch_value}})["spec"][field] == expected


def test_smp_service_ports_merge_by_port():
    svc = {"spec": {"ports": [{"port": 80, "targetPort": 8000}, {"port": 443, "targetPort": 8443}]}}
    out = smp({"spec": {"ports": [{"port": 443, "targetPort": 9443}]}}, svc)
    assert out["spec"]["ports"] == [{"port": 80, "targetPort": 8000}, {"port": 443, "targetPort": 9443}]


def test_smp_metadata_lists():
    out = smp(
        {
            "metadata": {
                "finalizers": ["b", "c", "c", "d"],
                "ownerReferences": [{"uid": "u1", "controller": True}, {"uid": "u2", "kind": "X"}],
            }
        }
    )
    assert out["metadata"]["finalizers"] == ["a", "b", "c", "d"]
    assert out["metadata"]["ownerReferences"] == [
        {"uid": "u1", "kind": "ReplicaSet", "name": "rs", "controller": True},
        {"uid": "u2", "kind": "X"},
    ]


def test_smp_conditions_merge_by_type():
    out = smp({"status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Initialized"}]}})
    assert out["status"]["conditions"] == [
        {"type": "Ready", "status": "True"},
        {"type": "Scheduled", "status": "True"},
        {"type": "Initialized"},
    ]


def test_smp_unknown_lists_are_replaced():
    endpoints = {"subsets": [{"addresses": [{"ip": "10.0.0.1"}]}]}
    assert smp({"subsets": [{"addresses": [{"ip": "10.0.0.2"}]}]}, endpoints) == {
        "subsets": [{"addresses": [{"ip": "10.0.0.2"}]}]
    }
    assert smp({"subsets": []}, endpoints) == {"subsets": []}


def test_smp_delete_directive_in_list():
    out = smp(
        {
            "spec": {
                "containers": [
                    {"name": "sidecar", "$patch": "delete"},
                    {"name": "notebook", "env": [{"name": "A", "$patch": "delete"}]},
                ],
                "volumes": [{"name": "nope", "$patch": "delete"}],
            }
        }
    )
    assert [c["name"] for c in out["spec"]["containers"]] == ["notebook"]
    assert out["spec"]["containers"][0]["env"] == [{"name": "B", "value": "2"}]
    assert out["spec"]["volumes"] == POD["spec"]["volumes"]


def test_smp_replace_directive_on_map():
    out = smp({"spec": {"nodeSelector": {"$patch": "replace", "zone": "b"}}})
    assert out["spec"]["nodeSelector"] == {"zone": "b"}
    out = smp({"metadata": {"labels": {"$patch": "replace"}}})
    assert out["metadata"]["labels"] == {}


def test_smp_delete_directive_on_map():
    assert smp({"spec": {"nodeSelector": {"$patch": "delete"}}})["spec"]["nodeSelector"] == {}


def test_smp_replace_directive_in_list():
    out = smp({"spec": {"containers": [{"name": "only", "image": "x"}, {"$patch": "replace"}]}})
    assert out["spec"]["containers"] == [{"name": "only", "image": "x"}]
    out = smp({"metadata": {"finalizers": [{"$patch": "replace"}, "z"]}})
    assert out["metadata"]["finalizers"] == ["z"]


def test_smp_merge_directive_is_the_default():
    out = smp({"metadata": {"$patch": "merge", "labels": {"x": "y"}}})
    assert out["metadata"]["labels"] == {"app": "jupyterhub", "component": "singleuser-server", "x": "y"}
    out = smp({"spec": {"containers": [{"name": "sidecar", "$patch": "merge", "image": "s2"}]}})
    assert out["spec"]["containers"][1] == {"name": "sidecar", "image": "s2"}


def test_smp_delete_from_primitive_list():
    out = smp({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"], "finalizers": ["c"]}})
    assert out["metadata"]["finalizers"] == ["b", "c"]
    out = smp({"spec": {"containers": [{"name": "notebook", "$deleteFromPrimitiveList/args": ["--debug"]}]}})
    assert out["spec"]["containers"][0]["args"] == ["start"]
    assert "$deleteFromPrimitiveList/args" not in out["spec"]["containers"][0]


def test_smp_strips_set_element_order_and_honours_retain_keys():
    out = smp(
        {
            "spec": {
                "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "notebook"}],
                "containers": [{"name": "sidecar", "image": "s2"}],
            }
        }
    )
    assert not any(k.startswith("$") for k in out["spec"])
    deployment = {"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}}
    out = smp({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}, deployment)
    assert out == {"spec": {"strategy": {"type": "Recreate"}}}


def test_smp_directives_and_nulls_are_stripped_from_new_values():
    out = smp({"spec": {"affinity": {"nodeAffinity": None, "x": {"$patch": "merge", "y": 1}}}})
    assert out["spec"]["affinity"] == {"x": {"y": 1}}
    out = smp({"spec": {"initContainers": [{"name": "init", "env": [{"name": "A", "$patch": "delete"}]}]}})
    assert out["spec"]["initContainers"] == [{"name": "init", "env": []}]


def test_smp_on_none_target():
    assert pure(strategic_merge_patch, None, {"a": {"b": None, "c": 1}}) == {"a": {"c": 1}}


@pytest.mark.parametrize(
    "patch, message",
    [
        (["x"], "strategic merge patch body must be a JSON object, got list"),
        ({"metadata": {"$patch": "explode"}}, "unknown strategic merge patch directive $patch: 'explode'"),
        (
            {"spec": {"containers": [{"image": "x"}]}},
            "containers: element {'image': 'x'} does not contain the merge key 'name'",
        ),
        (
            {"spec": {"containers": ["notebook"]}},
            "containers: list elements must be objects (merged by 'name')",
        ),
        (
            {"spec": {"containers": [{"name": "x", "$patch": "explode"}]}},
            "unknown strategic merge patch directive",
        ),
        (
            {"metadata": {"$deleteFromPrimitiveList/finalizers": "a"}},
            "$deleteFromPrimitiveList/finalizers must be a list",
        ),
        ({"spec": {"strategy": {"$retainKeys": "type"}}}, "$retainKeys must be a list"),
        ({"spec": {"ports": [{"name": "x"}]}}, "does not contain the merge key 'containerPort or port'"),
    ],
)
def test_malformed_strategic_merge_patch_is_400(patch, message):
    target = copy.deepcopy(POD)
    with pytest.raises(PatchError) as info:
        strategic_merge_patch(target, patch)
    assert info.value.code == 400
    assert message in str(info.value)
    assert target == POD


# --- apply ---


def test_apply_patch_creates_from_config_when_no_live_object():
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}}
    assert pure(apply_patch, None, config) == config
    assert apply_patch(None, config, "kubectl") == config


def test_apply_patch_merges_config_onto_live_object():
    live = {
        "metadata": {"name": "c", "uid": "u", "labels": {"a": "1"}},
        "spec": {"containers": [{"name": "x", "image": "1"}, {"name": "y", "image": "1"}]},
    }
    config = {
        "metadata": {"name": "c", "labels": {"b": "2"}},
        "spec": {"containers": [{"name": "y", "image": "2"}]},
    }
    out = pure(apply_patch, live, config, "apex")
    assert out == {
        "metadata": {"name": "c", "uid": "u", "labels": {"a": "1", "b": "2"}},
        "spec": {"containers": [{"name": "x", "image": "1"}, {"name": "y", "image": "2"}]},
    }


def test_apply_patch_requires_an_object():
    with pytest.raises(PatchError) as info:
        apply_patch({}, ["x"])
    assert info.value.code == 400 and "apply patch body must be an object, got list" in str(info.value)


# --- dispatch by content type ---


@pytest.mark.parametrize(
    "content_type, body, expected",
    [
        (MERGE_PATCH, {"spec": {"containers": [{"name": "z"}]}}, {"spec": {"containers": [{"name": "z"}]}}),
        (
            MERGE_PATCH + "; charset=utf-8",
            {"a": 1},
            {"a": 1, "spec": {"containers": [{"name": "x", "image": "1"}]}},
        ),
        (
            STRATEGIC_MERGE_PATCH,
            {"spec": {"containers": [{"name": "z"}]}},
            {"spec": {"containers": [{"name": "x", "image": "1"}, {"name": "z"}]}},
        ),
        (
            " Application/Strategic-Merge-Patch+JSON ;charset=UTF-8",
            {"a": 1},
            {"a": 1, "spec": {"containers": [{"name": "x", "image": "1"}]}},
        ),
        (
            JSON_PATCH,
            [{"op": "add", "path": "/spec/containers/-", "value": {"name": "z"}}],
            {"spec": {"containers": [{"name": "x", "image": "1"}, {"name": "z"}]}},
        ),
        (
            APPLY_PATCH,
            {"spec": {"containers": [{"name": "x", "image": "2"}]}},
            {"spec": {"containers": [{"name": "x", "image": "2"}]}},
        ),
    ],
)
def test_apply_by_content_type(content_type, body, expected):
    target = {"spec": {"containers": [{"name": "x", "image": "1"}]}}
    assert pure(lambda t, b: apply_by_content_type(content_type, t, b), target, body) == expected


def test_apply_by_content_type_apply_creates():
    assert apply_by_content_type(APPLY_PATCH, None, {"a": 1}) == {"a": 1}


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", "", None, "application/yaml"])
def test_unsupported_patch_type_is_415(content_type):
    with pytest.raises(PatchError) as info:
        apply_by_content_type(content_type, {}, {})
    assert info.value.code == 415
    assert str(info.value).startswith(f"unsupported patch type {content_type!r}")


@pytest.mark.parametrize(
    "content_type, body, message",
    [
        (MERGE_PATCH, ["x"], "merge patch body must be a JSON object, got list"),
        (STRATEGIC_MERGE_PATCH, "x", "strategic merge patch body must be a JSON object, got str"),
        (JSON_PATCH, {"op": "add"}, "json patch body must be a JSON array"),
        (APPLY_PATCH, None, "apply patch body must be an object, got NoneType"),
    ],
)
def test_apply_by_content_type_rejects_wrong_body_shape(content_type, body, message):
    with pytest.raises(PatchError) as info:
        apply_by_content_type(content_type, {}, body)
    assert info.value.code == 400 and message in str(info.value)


def test_apply_by_content_type_json_patch_failure_is_422():
    with pytest.raises(PatchError) as info:
        apply_by_content_type(JSON_PATCH, {"a": 1}, [{"op": "test", "path": "/a", "value": 2}])
    assert info.value.code == 422 and 'json patch "test" at "/a": test failed' in str(info.value)
