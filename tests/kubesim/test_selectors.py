"""Label and field selectors: what matches, and which selectors the server must reject."""

import copy

import pytest

from apex_hub.kubesim.selectors import SelectorError, field_selector, label_selector, label_selector_from_dict

LABELS = {
    "app": "jupyterhub",
    "component": "singleuser-server",
    "hub.jupyter.org/username": "alice",
    "app.kubernetes.io/name": "apex",
    "empty": "",
}


def test_selector_error_is_value_error():
    assert issubclass(SelectorError, ValueError)


@pytest.mark.parametrize("expr", [None, "", "   "])
def test_empty_label_selector_matches_everything(expr):
    match = label_selector(expr)
    assert match(LABELS) and match({}) and match(None)


@pytest.mark.parametrize(
    "expr, expected",
    [
        ("app=jupyterhub", True),
        ("app==jupyterhub", True),
        ("app=other", False),
        ("missing=x", False),
        ("app!=other", True),
        ("app!=jupyterhub", False),
        ("missing!=x", True),  # != also matches when the key is absent
        ("component in (singleuser-server, hub)", True),
        ("component in (hub,proxy)", False),
        ("missing in (a,b)", False),
        ("component notin (hub,proxy)", True),
        ("component notin (singleuser-server)", False),
        ("missing notin (a)", True),  # notin also matches when the key is absent
        ("app", True),
        ("missing", False),
        ("!missing", True),
        ("!app", False),
        ("hub.jupyter.org/username=alice", True),
        ("hub.jupyter.org/username=bob", False),
        ("app.kubernetes.io/name in (apex)", True),
        ("empty=", True),
        ("app=", False),
        ("empty in (,x)", True),
        ("app=jupyterhub,component=singleuser-server,hub.jupyter.org/username", True),
        ("app=jupyterhub,component=hub", False),
        ("  app = jupyterhub ,  component  in(singleuser-server) , ! missing ", True),
    ],
)
def test_label_selector_matching(expr, expected):
    assert label_selector(expr)(LABELS) is expected


def test_label_selector_treats_none_as_no_labels():
    assert label_selector("!app")(None) is True
    assert label_selector("app!=x")(None) is True
    assert label_selector("app")(None) is False
    assert label_selector("app=x")(None) is False


@pytest.mark.parametrize(
    "expr, message",
    [
        ("a in b", "expected '(' after 'a' in"),
        ("=x", "expected a label key at start of requirement, found '='"),
        ("a in (b", "missing ')' after the values of 'a' in"),
        ("a!!b", "expected an operator"),
        ("a notin", "expected '(' after 'a' notin"),
        ("a in (b c)", "expected a value, ',' or ')'"),
        ("a=b=c", "expected ',' or end of selector, found '='"),
        ("a b", "expected an operator (=, ==, !=, in, notin) or ',' after 'a', found 'b'"),
        ("a,", "expected a label key at start of requirement, found end of selector"),
        (",a", "expected a label key at start of requirement, found ','"),
        ("!", "expected a label key after '!'"),
        ("!a=b", "expected ',' or end of selector, found '='"),
        ("a=(b)", "expected a value after 'a' =, found '('"),
        ("-bad=x", "invalid label key '-bad'"),
        ("Bad_Prefix/x=y", "invalid label key 'Bad_Prefix/x': prefix must be a DNS subdomain"),
        ("/x=y", "prefix must be a DNS subdomain"),
        ("x=-bad", "invalid label value '-bad'"),
        ("x=" + "v" * 64, "invalid label value"),
    ],
)
def test_malformed_label_selectors_raise(expr, message):
    with pytest.raises(SelectorError) as info:
        label_selector(expr)
    assert message in str(info.value)
    assert str(info.value).startswith(f"invalid label selector {expr!r}: ")


def test_label_selector_does_not_mutate_labels():
    labels = copy.deepcopy(LABELS)
    label_selector("app=jupyterhub,!missing,component notin (x)")(labels)
    assert labels == LABELS


POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "jupyter-alice", "namespace": "apex", "labels": {"app": "jupyterhub"}},
    "spec": {"nodeName": "kubesim-node", "unschedulable": False, "priority": 0},
    "status": {"phase": "Running"},
}

EVENT = {
    "kind": "Event",
    "metadata": {"name": "jupyter-alice.1", "namespace": "apex"},
    "involvedObject": {"kind": "Pod", "name": "jupyter-alice", "namespace": "apex", "uid": "u-1"},
    "type": "Warning",
    "reason": "FailedScheduling",
}


@pytest.mark.parametrize("expr", [None, "", " "])
def test_empty_field_selector_matches_everything(expr):
    assert field_selector(expr)(POD) is True


@pytest.mark.parametrize(
    "obj, expr, expected",
    [
        (POD, "metadata.name=jupyter-alice", True),
        (POD, "metadata.name==jupyter-alice", True),
        (POD, "metadata.name!=jupyter-alice", False),
        (POD, "metadata.name=jupyter-bob", False),
        (POD, "metadata.namespace=apex", True),
        (POD, "status.phase=Running", True),
        (POD, "status.phase!=Failed,status.phase!=Succeeded", True),
        (POD, "spec.nodeName=kubesim-node", True),
        (POD, " metadata.name = jupyter-alice , status.phase = Running ", True),
        (POD, "metadata.name=jupyter-alice,status.phase=Pending", False),
        (POD, "spec.unschedulable=false", True),  # booleans compare in JSON spelling
        (POD, "spec.priority=0", True),  # numbers compare by str()
        (POD, "spec.missing=", True),  # a missing field is ""
        (POD, "spec.missing!=", False),
        (POD, "spec.missing=x", False),
        (POD, "spec.missing!=x", True),
        (POD, "metadata.name.deeper=", True),  # a path through a scalar is missing too
        (POD, "metadata.name=jupyter-alice,", True),  # empty terms are skipped
        (EVENT, "involvedObject.kind=Pod,involvedObject.name=jupyter-alice", True),
        (EVENT, "involvedObject.namespace=apex,involvedObject.uid=u-1", True),
        (EVENT, "involvedObject.uid=u-2", False),
        (EVENT, "type=Warning,reason=FailedScheduling", True),
        (EVENT, "type=Normal", False),
        ({"metadata": {"name": "a,b=c"}}, r"metadata.name=a\,b\=c", True),
        ({"metadata": {"name": "a\\b"}}, r"metadata.name=a\\b", True),
    ],
)
def test_field_selector_matching(obj, expr, expected):
    assert field_selector(expr)(obj) is expected


@pytest.mark.parametrize(
    "expr, message",
    [
        ("metadata.name in (a,b)", "set-based operators are not supported for fields"),
        ("metadata.name notin (a)", "expected one of '=', '==' or '!='"),
        ("status.phase", "invalid field selector term 'status.phase': expected one of"),
        ("=x", "'' is not a field path like metadata.name"),
        ("metadata name=x", "'metadata name' is not a field path"),
        ("a..b=x", "'a..b' is not a field path"),
        ("a=b=c", "unescaped '=' in value"),
        (r"a=b\x", r"invalid escape sequence '\x'"),
    ],
)
def test_malformed_field_selectors_raise(expr, message):
    with pytest.raises(SelectorError) as info:
        field_selector(expr)
    assert message in str(info.value)


def test_field_selector_does_not_mutate_object():
    obj = copy.deepcopy(EVENT)
    field_selector("involvedObject.name=jupyter-alice,missing.path!=x")(obj)
    assert obj == EVENT


@pytest.mark.parametrize("sel", [{}, None, {"matchLabels": {}, "matchExpressions": []}])
def test_empty_label_selector_object_matches_everything(sel):
    match = label_selector_from_dict(sel)
    assert match(LABELS) and match({}) and match(None)


@pytest.mark.parametrize(
    "sel, expected",
    [
        ({"matchLabels": {"app": "jupyterhub", "hub.jupyter.org/username": "alice"}}, True),
        ({"matchLabels": {"app": "jupyterhub", "hub.jupyter.org/username": "bob"}}, False),
        (
            {"matchExpressions": [{"key": "component", "operator": "In", "values": ["singleuser-server"]}]},
            True,
        ),
        ({"matchExpressions": [{"key": "component", "operator": "In", "values": ["hub"]}]}, False),
        ({"matchExpressions": [{"key": "component", "operator": "NotIn", "values": ["hub"]}]}, True),
        ({"matchExpressions": [{"key": "missing", "operator": "NotIn", "values": ["hub"]}]}, True),
        ({"matchExpressions": [{"key": "app", "operator": "Exists"}]}, True),
        ({"matchExpressions": [{"key": "missing", "operator": "Exists", "values": []}]}, False),
        ({"matchExpressions": [{"key": "missing", "operator": "DoesNotExist"}]}, True),
        ({"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]}, False),
        (
            {
                "matchLabels": {"app": "jupyterhub"},
                "matchExpressions": [
                    {"key": "app.kubernetes.io/name", "operator": "In", "values": ["x", "apex"]}
                ],
            },
            True,
        ),
        (
            {
                "matchLabels": {"app": "jupyterhub"},
                "matchExpressions": [{"key": "component", "operator": "DoesNotExist"}],
            },
            False,
        ),
    ],
)
def test_label_selector_from_dict_matching(sel, expected):
    assert label_selector_from_dict(sel)(LABELS) is expected


def test_label_selector_from_dict_with_none_labels():
    assert label_selector_from_dict({"matchLabels": {"app": "x"}})(None) is False
    assert (
        label_selector_from_dict({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]})(None)
        is True
    )


@pytest.mark.parametrize(
    "sel, message",
    [
        (
            {"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["b"]}]},
            "operator 'Equals' is not one of In, NotIn, Exists, DoesNotExist",
        ),
        (
            {"matchExpressions": [{"key": "a", "operator": "In", "values": []}]},
            "values must be non-empty for In",
        ),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn"}]}, "values must be non-empty for NotIn"),
        (
            {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["b"]}]},
            "values must be empty for Exists",
        ),
        (
            {"matchExpressions": [{"key": "a", "operator": "In", "values": "b"}]},
            "values must be a list of strings",
        ),
        ({"matchExpressions": [{"operator": "Exists"}]}, "missing its key"),
        ({"matchExpressions": ["a"]}, "entries must be objects"),
        ({"matchLabels": {"a": 1}}, "matchLabels['a'] must be a string"),
        ({"matchLabels": ["a"]}, "matchLabels must be an object"),
        ({"matchLabels": {"-a": "b"}}, "invalid label key '-a'"),
        ({"matchLabels": {"a": "b c"}}, "invalid label value 'b c'"),
        ("app=x", "label selector must be an object"),
    ],
)
def test_malformed_label_selector_objects_raise(sel, message):
    with pytest.raises(SelectorError) as info:
        label_selector_from_dict(sel)
    assert message in str(info.value)


def test_label_selector_from_dict_does_not_mutate_inputs():
    sel = {
        "matchLabels": {"app": "jupyterhub"},
        "matchExpressions": [{"key": "component", "operator": "In", "values": ["singleuser-server"]}],
    }
    before, labels = copy.deepcopy(sel), copy.deepcopy(LABELS)
    assert label_selector_from_dict(sel)(labels) is True
    assert sel == before and labels == LABELS
