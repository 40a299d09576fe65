"""``APExSpawner``: KubeSpawner plus a workspace per user, from a group-gated catalogue.

What it adds to KubeSpawner 7 (and why):

* **the profile is authorised at spawn time** (``load_user_options``), not only when
  the form is drawn, so a REST API call cannot pick another group's profile or
  smuggle KubeSpawner settings through ``user_options``;
* **a workspace** in a namespace of the user's own (``provision_workspace``):
  guard rails, ConfigMaps, claims, copied pull secrets, operator manifests and
  Conda environments, written with server-side apply (config changes reach
  existing objects), concurrently (namespace, then everything else, then the pod),
  retried on 409/429/5xx/timeouts, each step shown on the spawn page;
* **cleanup by label**: a stop deletes this server's non-persistent objects by
  selector (no PersistentVolumeClaim but the server's scratch claims); deleting a user
  removes the namespace only when the operator enabled it;
* **secure pods by default** (the Kubernetes "restricted" profile).
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import os
from typing import Any
from urllib.parse import quote

from kubernetes_asyncio.client.exceptions import ApiException
from kubespawner import KubeSpawner
from tornado import web
from traitlets import Bool, Dict, Float, Int, List, TraitError, Unicode, default, validate

from ..naming import legacy_slugify, legacy_user_namespace, slugify, user_namespace
from ..profiles import Catalogue, CatalogueError, CatalogueFile, Profile, ProfileError, VolumeItem
from . import conda_cache, lean, oidc_token, readiness
from . import labels as L
from .escalation import DEFAULT_HUB_RULES, profile_problems
from .kube import (
    Kube,
    KubeError,
    describe,
    is_namespace_terminating,
    is_transient,
    skip_env_lookups,
    terminating,
)
from .ownership import NamespaceRefused, owner_problem, refusal, reserved_reason
from .podgate import pod_problems
from .workspace import (
    DEFAULT_MANIFEST_KINDS,
    RESTRICTED_CONTAINER,
    RESTRICTED_POD,
    Owner,
    Plan,
    Settings,
    WorkspaceError,
    content_hash,
    plan_workspace,
)

#: Kinds whose objects must exist before the pod is created: admission reads them
#: (ServiceAccount, ResourceQuota, LimitRange) or they isolate the pod (NetworkPolicy).
POD_PREREQUISITE_KINDS = frozenset({"ServiceAccount", "NetworkPolicy", "ResourceQuota", "LimitRange"})
#: Kinds a stop always sweeps for this server's non-persistent objects.
SWEPT_KINDS = (
    "v1/ConfigMap",
    "v1/Secret",
    "rbac.authorization.k8s.io/v1/Role",
    "rbac.authorization.k8s.io/v1/RoleBinding",
)
_FALLBACK_CATALOGUE = {
    "profiles": [{"slug": "default", "display_name": "Default environment", "default": True}]
}
_FILES: dict[str, CatalogueFile] = {}
#: (profile, problem) pairs already logged: the form is drawn often.
_LOGGED_RBAC: set[tuple[str, str]] = set()
#: True only inside KubeSpawner's pod-create call (its 409 path stops the old pod from
#: there): that stop must keep the workspace. A context variable, so that a stop the hub
#: runs concurrently (another task) during the create window still sweeps.
_REPLACING_POD: contextvars.ContextVar[bool] = contextvars.ContextVar("apex_replacing_pod", default=False)


class NamespaceTerminating(Exception):
    """The user's namespace is still being deleted: nothing can be written into it yet."""


def _same(a: dict, b: dict) -> bool:
    return a["kind"] == b["kind"] and a["metadata"]["name"] == b["metadata"]["name"]


def _split_kind(kind: str) -> tuple[str, str]:
    api_version, _, name = kind.rpartition("/")
    return api_version, name


class APExSpawner(KubeSpawner):
    """KubeSpawner with per-user workspaces and a group-gated profiles catalogue."""

    # -- the catalogue --------------------------------------------------------------------

    profiles_file = Unicode(
        "",
        config=True,
        help="""Path of the profiles catalogue (YAML; see examples/profiles.yml), usually a
        ConfigMap mounted into the hub. Re-read when it changes; an invalid edit is logged
        and the last good version stays in use. Takes precedence over `profiles_catalogue`.""",
    )
    profiles_catalogue = Dict(
        config=True,
        help="""The profiles catalogue as a dict (the same structure as the YAML file), for
        configuration in Python. Used when `profiles_file` is empty. With neither, one
        'default' profile with the spawner's own settings is offered.""",
    )

    hub_rules = List(
        Dict(),
        [dict(r) for r in DEFAULT_HUB_RULES],
        allow_none=True,
        config=True,
        help="""The RBAC rules the hub's ServiceAccount holds in user namespaces (Kubernetes
        PolicyRules, camelCase). Default: the ClusterRole of helm-values/rbac.yaml. Kubernetes
        lets the hub create a profile's Role only if it holds everything the Role grants (or
        `escalate`), so a profile whose role_bindings or Role/RoleBinding manifests grant more
        is left out of the form and refused at spawn, with an error in the hub log naming the
        profile, the binding and the missing rules. List here what you added to the hub's
        ClusterRole. None: no check (the API server still refuses, at spawn, with a 403).""",
    )

    # -- the namespace --------------------------------------------------------------------

    namespace_prefix = Unicode(
        "apex-",
        config=True,
        help="""Prefix of user namespaces: `<prefix><user slug>`. The slug is stable and
        collision-free (`Alice`, `alice`, `a.lice`, `alice@x.org` get different namespaces)
        and the whole name is cut to 63 characters with a hash.""",
    )
    namespace_labels = Dict(
        config=True, help="Extra labels on every user namespace (applied on every spawn)."
    )
    namespace_annotations = Dict(
        config=True, help="Extra annotations on every user namespace (applied on every spawn)."
    )
    protected_namespaces = List(
        Unicode(),
        config=True,
        help="""Namespaces that are never used as a user namespace, in addition to the hub's
        (`hub_namespace`), `default` and `kube-*`: a user whose namespace name would be one of
        them cannot start a server (e.g. with `namespace_prefix = ""`).""",
    )
    delete_namespace_on_user_delete = Bool(
        False,
        config=True,
        help="""Delete the user's namespace, with every PersistentVolumeClaim in it, when the
        user is deleted from JupyterHub. Off by default: the data outlives the account.""",
    )

    # -- guard rails ----------------------------------------------------------------------

    workspace_service_account = Unicode(
        "workspace",
        allow_none=True,
        config=True,
        help="""ServiceAccount created in each user namespace for the server pod, with no API
        token mounted unless the profile says `service_account_token: true` (then the pod
        mounts it and can use what the profile's `role_bindings` grant this account). None:
        use the namespace's `default` account, and refuse profiles that ask for the token.""",
    )
    network_policy = Bool(
        True,
        config=True,
        help="""Create a default-deny ingress NetworkPolicy in each user namespace that admits
        only the hub and proxy pods (`hub_pod_labels` in `hub_namespace`).""",
    )
    hub_namespace = Unicode(
        config=True,
        help="""Namespace of the hub: where image pull secrets are copied from and which the
        NetworkPolicy admits. Default: $POD_NAMESPACE, else the service account's namespace.""",
    )
    hub_pod_labels = Dict(
        {"hub.jupyter.org/network-access-singleuser": "true"},
        config=True,
        help="""Labels of the pods in `hub_namespace` that may reach user servers, and that user
        servers may reach (Z2JH gives this label to the hub and the proxy). Selected by
        namespace and pod labels, which every NetworkPolicy implementation (Cilium too) honours.""",
    )
    network_policy_egress = Bool(
        True,
        config=True,
        help="""Restrict egress from user pods (with `network_policy`): DNS (port 53), the hub
        and proxy pods, the pods of the user's own namespace, and the internet
        (`egress_allowed_cidrs`) except `egress_blocked_cidrs`. Replaces the Z2JH chart's
        privileged `block-cloud-metadata` init container.""",
    )
    egress_allowed_cidrs = List(
        Unicode(),
        ["0.0.0.0/0"],
        config=True,
        help="""Where user pods may connect outside the cluster (NetworkPolicy ipBlock). Empty:
        no internet, only DNS, the hub and the user's own namespace.""",
    )
    egress_blocked_cidrs = List(
        Unicode(),
        ["169.254.169.254/32"],
        config=True,
        help="""Excepted from `egress_allowed_cidrs`: by default the cloud metadata endpoint
        (node credentials on most clouds). Add private ranges to keep workspaces away from
        in-cluster services that are reached by IP.""",
    )
    resource_quota = Dict(
        None,
        allow_none=True,
        config=True,
        help="""ResourceQuota spec for every user namespace (e.g. `{"hard": {"requests.cpu":
        "8"}}`); a profile's `resource_quota` replaces it. None: no quota.""",
    )
    limit_range = Dict(
        None,
        allow_none=True,
        config=True,
        help="""LimitRange spec for every user namespace; a profile's `limit_range` replaces it.""",
    )
    manifest_kinds = List(
        Unicode(),
        list(DEFAULT_MANIFEST_KINDS),
        config=True,
        help="""Kinds that a profile's `manifests` may create in the user namespace, as `Kind`
        or `apiVersion/Kind`. Anything else is refused before any object is written.""",
    )
    secure_pod_defaults = Bool(
        True,
        config=True,
        help="""Run server pods under Kubernetes' "restricted" Pod Security Standard
        (runAsNonRoot, no privilege escalation, all capabilities dropped, seccomp
        RuntimeDefault). A profile's `security_context` (allowed by the catalogue's
        `allow_security_overrides`) is merged on top.""",
    )

    # -- storage and Conda ----------------------------------------------------------------

    workspace_volume = Dict(
        {"name": "workspace", "size": "10Gi", "mount_path": "/home/jovyan"},
        allow_none=True,
        config=True,
        help="""The persistent workspace volume every profile gets (profile volume fields);
        a profile volume with the same name replaces it. None: only the profiles' volumes.""",
    )
    workspace_volume_name = Unicode(
        "workspace", config=True, help="Name of the volume that Conda environments are built into."
    )
    conda_builder = Unicode(
        "auto",
        config=True,
        help="""How environments are built in the init container: `auto` (micromamba, mamba or
        conda from the image), one of those, or `venv` (no Conda: a Python venv with the
        image's packages plus the file's `pip:` list).""",
    )
    conda_specs_path = Unicode(
        "/etc/apex/conda",
        config=True,
        help="Where the environment files and their build script are mounted in the init container.",
    )
    condarc_path = Unicode(
        "/etc/conda/.condarc",
        config=True,
        help="Where a profile's `condarc` is mounted (a path Conda reads system-wide).",
    )
    conda_cache_volume = Dict(
        None,
        allow_none=True,
        config=True,
        help="""A shared cache of Conda environments, built once per cluster (see the how-to "Conda
        environments built once per cluster"): a Kubernetes volume source that the hub's namespace
        and every user namespace can mount, e.g. `{"nfs": {"server": "nfs.example", "path":
        "/apex-conda"}}`, a CSI volume, or `{"hostPath": {"path": "/opt/apex/conda-cache"}}` on a
        single node (not a claim: a claim belongs to one namespace). Each environment is then
        built by one Job in the hub's namespace (mounting it read-write) and used read-only by
        every workspace; a user's own current build in their claim is kept, and a start that
        finds no complete shared build builds per user as without it. Needs
        `helm-values/conda-cache-rbac.yaml`. None: every user builds their own.""",
    )
    conda_cache_path = Unicode(
        "/opt/apex/conda-cache",
        config=True,
        help="""Where `conda_cache_volume` is mounted, in the build Jobs and in every workspace
        alike (a Conda prefix is not relocatable: it must be seen at the path it was built at).""",
    )
    conda_cache_wait = Float(
        300,
        config=True,
        help="""How long (seconds) a workspace's init container waits for a shared build still in
        progress before it builds the environment itself (the Job is building the same thing:
        waiting saves a second build); 0: never wait. The wait also ends when the build fails, or
        makes no progress for `conda_cache_stall` seconds.""",
    )
    conda_cache_stall = Float(
        60,
        config=True,
        help="""A shared build whose heartbeat does not move for this long (seconds; its Job's pod
        not started yet counts) is not waited for any longer.""",
    )

    # -- the user's access token -----------------------------------------------------------

    oidc_token_mount_path = Unicode(
        "/var/run/secrets/apex/oidc",
        allow_none=True,
        config=True,
        help="""Directory where the user's OpenID Connect access token is mounted (file
        `access_token`, plus `expires_at`), from a Secret rewritten on every token refresh
        (needs `enable_auth_state` and the APEx authenticator). The server also gets
        `APEX_OIDC_TOKEN_FILE` and `APEX_OIDC_TOKEN_URL` (a hub API URL returning a fresh token
        for the server's own `JUPYTERHUB_API_TOKEN`). None or empty: no token in the workspace.""",
    )

    @default("server_token_scopes")
    def _default_server_token_scopes(self):
        from jupyterhub.scopes import scope_definitions

        from ..auth.handlers import TOKEN_SCOPE

        wanted = ["access:servers!server", "users:activity!user"]
        if TOKEN_SCOPE in scope_definitions:  # defined by apex_hub.auth
            wanted.append(f"{TOKEN_SCOPE}!user")
        return wanted

    # -- API behaviour --------------------------------------------------------------------

    provision_concurrency = Int(
        16, config=True, help="How many workspace objects are written at the same time."
    )
    namespace_deletion_wait = Float(
        90,
        config=True,
        help="""How long (seconds) a spawn waits for the user's previous namespace to finish
        being deleted (Kubernetes refuses new objects in a Terminating namespace) before it
        re-creates the namespace; the spawn page says "your previous workspace is still being
        deleted". After that the spawn fails and asks the user to try again shortly. The same
        bound applies to a scratch claim of the server's previous run that is still being
        deleted (`volumes[].scratch`). Keep it well below `start_timeout`, which bounds the
        whole start.""",
    )

    pod_with_workspace = Bool(
        True,
        config=True,
        help="""Create the pod in the same round of API requests as the rest of the workspace
        when an earlier spawn of this server wrote, with the same content, everything the
        pod's admission and isolation need first: the namespace, the workspace
        ServiceAccount, the NetworkPolicy, the ResourceQuota and LimitRange, and the pull
        secrets (a warm spawn: one round trip to the API server instead of two). A profile
        with scratch claims, or with pull secrets its manifests make for the server, always
        waits, as does a spawn after any of those changed. When the workspace fails, the
        pod made with it is deleted. False: the pod always waits for the workspace.""",
    )
    gc_freeze = Bool(
        True,
        config=True,
        help="""Call `gc.freeze()` once per hub process, when the first APExSpawner is made
        (the hub's configuration and modules are loaded by then): the objects alive at that
        moment (the imported modules', ~200k with kubernetes_asyncio's models) are left out of
        garbage collections, whose full passes otherwise block the hub for 100-700 ms at a
        time under load. Costs the memory of whatever garbage exists at that moment (once).
        False: leave the collector alone.""",
    )
    server_ready_poll = Float(
        0.0,
        config=True,
        help="""Once the pod runs, knock on the server's port every this many seconds (a TCP
        connect) until it listens, before handing over to JupyterHub's own check that it
        answers: that check waits with a backoff growing to 5 s between tries, so a server
        that needs 3 s to start is otherwise typically found 1-5 s late (the Helm values set
        0.5, local mode 0.1). Bounded by `http_timeout`; after that JupyterHub's check
        decides. 0 (the default): leave it to JupyterHub's check alone.""",
    )
    lean_reflectors = Bool(
        True,
        config=True,
        help="""Give KubeSpawner's pod and event reflectors a watch that hands out the raw
        objects they use, instead of one that builds an API client per watch (an SSL
        context: tens of ms) and a typed model per event (ms each) that they never read
        (`apex_hub.spawner.lean`). Applies to every KubeSpawner in the process. False:
        kubernetes_asyncio's own watch.""",
    )

    @default("hub_namespace")
    def _default_hub_namespace(self):
        # KubeSpawner's own default reads the service account's namespace (else "default")
        return os.environ.get("POD_NAMESPACE") or KubeSpawner._namespace_default(self)

    @default("enable_user_namespaces")
    def _default_user_namespaces(self):
        return True

    @validate("egress_allowed_cidrs", "egress_blocked_cidrs")
    def _valid_cidrs(self, proposal):
        import ipaddress

        for cidr in proposal["value"]:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as exc:
                raise TraitError(f"{proposal['trait'].name}: {cidr!r} is not a CIDR block ({exc})") from None
        return proposal["value"]

    @default("profile_list")
    def _default_profile_list(self):
        return self._profile_entries

    _warned_profile_list = False

    def _own_profile_list(self) -> None:
        """The catalogue is the profile list, whatever ``KubeSpawner.profile_list`` says.

        The Z2JH chart sets ``c.KubeSpawner.profile_list = []`` (``singleuser.profileList``),
        which would otherwise empty the form; an operator's list is ignored, with a warning.
        """
        configured = self.profile_list
        if configured == self._profile_entries:
            return
        if configured and not APExSpawner._warned_profile_list:
            APExSpawner._warned_profile_list = True  # once per hub process, not per spawner
            self.log.warning(
                "KubeSpawner.profile_list is set (singleuser.profileList in the Z2JH"
                " chart) but is ignored: APExSpawner offers the profiles of its"
                " catalogue (APExSpawner.profiles_file). Move the profiles there."
            )
        self.profile_list = self._profile_entries

    @default("apply_user_options")
    def _default_apply_user_options(self):
        def profile_applied_at_start(spawner, user_options):
            """``user_options`` are checked and applied by ``load_user_options``, after the gate."""

        return profile_applied_at_start

    @default("common_labels")
    def _default_common_labels(self):
        # KubeSpawner's, except that the pods say who manages them (its common labels would
        # otherwise overwrite our ownership label with "kubespawner")
        return {
            "app.kubernetes.io/name": "jupyterhub",
            L.MANAGED_BY: L.MANAGER,
            "app": "jupyterhub",
            "heritage": "jupyterhub",
        }

    @default("events_enabled")
    def _default_events(self):
        return True

    # -------------------------------------------------------------------------------------

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._own_profile_list()
        self.enable_user_namespaces = True
        self.storage_pvc_ensure = False  # claims are part of the workspace
        self.namespace = user_namespace(self.user.name, self.namespace_prefix)
        self.profile: Profile | None = None
        self.plan: Plan | None = None
        self._server_kinds: list[str] = []
        self._conda_jobs: list[dict] = []  # shared Conda build Jobs this spawn ensures (conda_cache)
        #: This server had scratch claims (some spawn planned one): its stops delete them.
        self._scratch_claims = False
        self._progress_events: list[dict] = []
        self._progress_changed = asyncio.Event()
        self._provisioned = False
        #: The namespace whose ownership was checked (read, or created by us); in state.
        self._namespace_verified: str | None = None
        self._namespace_refused: str | None = None
        self._namespace_from_state = False
        self._profile_slug: str | None = None
        self._allow_security = False
        self._configured: dict[str, Any] = {}
        self._auth_state: dict = {}
        #: The workspace being written while KubeSpawner builds the pod (``pod_with_workspace``).
        self._workspace_round: asyncio.Future | None = None
        #: Hash of the pod's prerequisites as last written (``_pod_prerequisites``); in state.
        self._prerequisites_written: str | None = None
        self._kube: Kube | None = None
        self._kube_key: tuple | None = None
        lean.use_lean_watch(self.lean_reflectors)
        if self.gc_freeze:
            lean.freeze_once(self.log)

    @property
    def user_slug(self) -> str:
        """The user's name as a label value (stable, collision-free, ≤ 63 characters)."""
        return slugify(self.user.name)

    @property
    def server_name(self) -> str:
        return self.name or ""

    def group_names(self) -> list[str]:
        """The user's JupyterHub groups (synced from the identity provider by the authenticator)."""
        return [getattr(g, "name", g) for g in (getattr(self.user, "groups", None) or [])]

    def catalogue(self) -> Catalogue:
        """The current catalogue (the file is re-read when it changed)."""
        if self.profiles_file:
            if self.profiles_file not in _FILES:
                _FILES[self.profiles_file] = CatalogueFile(self.profiles_file, self.log)
            return _FILES[self.profiles_file].current()
        return Catalogue.from_dict(self.profiles_catalogue or _FALLBACK_CATALOGUE, "profiles_catalogue")

    # -- the form -------------------------------------------------------------------------

    def _profile_entries(self, spawner=None) -> list[dict]:
        """KubeSpawner's ``profile_list``: only the profiles of the user's groups."""
        try:
            visible = self.catalogue().for_groups(self.group_names())
        except CatalogueError as exc:
            self.log.error("%s", exc)
            return []
        entries = [
            p.profile_list_entry()
            for p in visible
            if not self._rbac_problems(p) and not self._token_problem(p)
        ]
        if entries and not any(e["default"] for e in entries):
            entries[0] = {**entries[0], "default": True}
        return entries

    def _token_problem(self, profile: Profile) -> str | None:
        """Why ``profile`` cannot have the API token it asks for (None: it can, or asks none).

        The namespace's ``default`` account is no stand-in: its token is not what the
        profile's role_bindings grant, and it is every other pod's there.
        """
        if not profile.service_account_token or self.workspace_service_account:
            return None
        return (
            "asks for the workspace ServiceAccount's API token (service_account_token:"
            " true), but the operator disabled that account"
            " (APExSpawner.workspace_service_account is empty); set"
            " APExSpawner.workspace_service_account (default 'workspace'), or remove"
            " service_account_token from the profile"
        )

    def _rbac_problems(self, profile: Profile) -> list[str]:
        """What the hub could not create of ``profile`` (RBAC escalation); logged once each."""
        if self.hub_rules is None:
            return []
        problems = profile_problems(profile, self.hub_rules)
        for problem in problems:
            if (profile.slug, problem) not in _LOGGED_RBAC:
                _LOGGED_RBAC.add((profile.slug, problem))
                self.log.error(
                    "profile %r cannot be started by the hub (Kubernetes RBAC escalation"
                    " prevention), so it is not offered: %s. Grant the hub these rules"
                    " (helm-values/rbac.yaml) and list them in APExSpawner.hub_rules,"
                    " or remove them from the profile",
                    profile.slug,
                    problem,
                )
        return problems

    async def _render_options_form_dynamically(self, current_spawner):
        entries = self._profile_entries()
        if not entries:
            return (
                "<div class='alert alert-warning'>No server profile is available to you yet."
                " Ask an administrator to add you to a group that has access.</div>"
            )
        return self._render_options_form(entries)

    # -- spawn: the gate ------------------------------------------------------------------

    async def load_user_options(self):
        """Authorise the chosen profile for the user's groups, then plan the workspace.

        Runs first in ``start()``: nothing is written to Kubernetes before the gate.
        """
        await lean.take_turn()  # many spawns at once: their planning takes turns
        options = self.user_options or {}
        if not isinstance(options, dict):
            raise web.HTTPError(400, 'user_options must be an object such as {"profile": "jupyterlab"}')
        unknown = sorted(set(options) - {"profile"})
        if unknown:
            raise web.HTTPError(
                403,
                f"Only a profile can be chosen when starting a server; these options are not"
                f" accepted: {', '.join(map(str, unknown))}.",
            )
        slug = options.get("profile")
        if slug is not None and not isinstance(slug, str):
            raise web.HTTPError(400, "user_options.profile must be a profile slug (a string)")
        try:
            catalogue = self.catalogue()
        except CatalogueError as exc:
            self.log.error("%s", exc)
            raise web.HTTPError(
                503,
                "The server profiles are misconfigured; the administrators"
                " have been told. Please try again later.",
            ) from None
        groups = self.group_names()
        try:
            profile = catalogue.authorize(slug, groups)
        except ProfileError as exc:
            self.log.warning("refused profile %r for %s (groups %s): %s", slug, self.user.name, groups, exc)
            raise web.HTTPError(exc.status_code, str(exc)) from None
        problems = self._rbac_problems(profile)
        if problems:
            raise web.HTTPError(
                500,
                f"Profile {profile.slug!r} cannot be started: the hub is not"
                f" allowed to create its roles ({'; '.join(problems)}). The"
                " administrators have been told.",
            )
        if profile.session_mode == "off":
            raise web.HTTPError(
                403,
                f"Profile {profile.slug!r} is switched off: servers cannot be started from it at the moment.",
            )
        self._allow_security = catalogue.allow_security_overrides
        self.apply_profile(profile)

    #: Traits a profile sets besides its ``kubespawner_traits()``.
    _PROFILE_TRAITS = (
        "default_url",
        "container_security_context",
        "pod_security_context",
        "extra_labels",
        "image_pull_secrets",
        "service_account",
        "automount_service_account_token",
        *(n for pair in (("cpu_limit", "cpu_guarantee"), ("mem_limit", "mem_guarantee")) for n in pair),
    )
    #: A profile that sets one of a pair sets both: the other is not inherited from the
    #: operator's (or the chart's, e.g. its 1G mem_guarantee) KubeSpawner settings.
    _RESOURCE_PAIRS = (("cpu_limit", "cpu_guarantee"), ("mem_limit", "mem_guarantee"))

    def _reset_profile_traits(self, names) -> None:
        """Undo the previous profile: the hub reuses this object for the next spawn.

        KubeSpawner merges overrides into the live traits, so a GPU profile's node
        selector or labels would otherwise leak into the next, unrelated profile.
        """
        for name in names:
            if name not in self._configured:
                self._configured[name] = copy.deepcopy(getattr(self, name))
        for name, value in self._configured.items():
            setattr(self, name, copy.deepcopy(value))

    def apply_profile(self, profile: Profile) -> None:
        """Set KubeSpawner's traits from ``profile`` and plan the workspace."""
        traits = profile.kubespawner_traits()
        self._reset_profile_traits([*traits, *self._PROFILE_TRAITS])
        self.profile = profile
        self._profile_slug = profile.slug
        for pair in self._RESOURCE_PAIRS:
            if any(getattr(profile, name) is not None for name in pair):
                for name in pair:
                    setattr(self, name, None)
        self._apply_overrides(traits)
        if profile.default_url:
            self.default_url = profile.default_url
        if self.secure_pod_defaults:
            self.container_security_context = {**RESTRICTED_CONTAINER, **(profile.security_context or {})}
            self.pod_security_context = {**RESTRICTED_POD, **self.pod_security_context}
        self.extra_labels = {
            **self.extra_labels,
            **L.ownership(self.user_slug, self.server_name, profile.slug, False),
            "hub.jupyter.org/network-access-hub": "true",
        }
        why = self._token_problem(profile)
        if why:
            self.log.error("profile %r %s", profile.slug, why)
            raise web.HTTPError(500, f"Profile {profile.slug!r} cannot be started: it {why}.")
        if self.workspace_service_account:
            self.service_account = self.workspace_service_account
            # the pod's field wins over the ServiceAccount's automountServiceAccountToken: false
            self.automount_service_account_token = profile.service_account_token
        rendered = self._with_workspace_volume(profile).render(
            username=self.user_slug, namespace=self.namespace
        )
        owner = self._owner()
        try:
            self.plan = plan_workspace(owner, rendered, self.settings(), self.image)
        except WorkspaceError as exc:
            self.log.error("%s", exc)
            raise web.HTTPError(500, f"Profile {profile.slug!r} cannot be started: {exc}") from None
        # copied from the hub namespace, then those the profile's manifests make (as they are)
        self.image_pull_secrets = list(self.plan.image_pull_secrets)
        self._add_token(self.plan)
        self._conda_jobs = conda_cache.add_to_plan(self, self.plan, rendered)
        self._server_kinds = sorted(set(self._server_kinds) | set(self.plan.server_kinds))
        self._scratch_claims = self._scratch_claims or bool(self.plan.scratch_claims)

    # -- the access token ---------------------------------------------------------------------

    async def run_auth_state_hook(self, auth_state):
        """Keep the login's tokens for the workspace (the hub calls this before ``start``)."""
        self._auth_state = dict(auth_state or {})
        return await super().run_auth_state_hook(auth_state)

    def _owner(self) -> Owner:
        return Owner(self.user.name, self.user_slug, self.namespace, self.server_name)

    def _token_secret(self) -> dict | None:
        """The token Secret from the latest auth state (``None``: no token, or none wanted)."""
        if not self.oidc_token_mount_path:
            return None
        return oidc_token.token_secret(self._owner(), self._profile_slug, self._auth_state)

    def _add_token(self, plan: Plan) -> None:
        secret = self._token_secret()
        if secret is None:
            return
        volume, mount = oidc_token.token_mount(self.server_name, self.oidc_token_mount_path)
        plan.objects.append(secret)
        plan.volumes.append(volume)
        plan.volume_mounts.append(mount)
        url = f"{self.hub.api_url.rstrip('/')}/apex/users/{quote(self.user.name, safe='')}/oidc-token"
        plan.env.extend(oidc_token.token_env(self.oidc_token_mount_path, url))

    async def publish_oidc_token(self, auth_state: dict) -> bool:
        """Rewrite the running server's token Secret (the authenticator calls this on refresh)."""
        self._auth_state = dict(auth_state or {})
        secret = self._token_secret()
        if secret is None:
            return False
        if self.plan is not None:  # a spawn still writing its workspace must not undo this
            self.plan.objects = [secret if _same(o, secret) else o for o in self.plan.objects]
        kube = self.kube()
        if not await self._namespace_is_mine(kube):
            return False
        await kube.apply(secret)
        self.log.info("%s: access token updated in the workspace", self._log_name)
        return True

    def _with_workspace_volume(self, profile: Profile) -> Profile:
        """The profile plus the operator's workspace claim, unless it opted out or has its own."""
        if (
            not self.workspace_volume
            or not profile.workspace_volume
            or any(v.name == self.workspace_volume["name"] for v in profile.volumes)
        ):
            return profile
        return profile.model_copy(update={"volumes": [VolumeItem(**self.workspace_volume), *profile.volumes]})

    def settings(self) -> Settings:
        return Settings(
            namespace_labels=dict(self.namespace_labels),
            namespace_annotations=dict(self.namespace_annotations),
            service_account=self.workspace_service_account,
            network_policy=self.network_policy,
            hub_namespace=self.hub_namespace,
            hub_pod_labels=dict(self.hub_pod_labels),
            network_policy_egress=self.network_policy_egress,
            egress_allowed_cidrs=tuple(self.egress_allowed_cidrs),
            egress_blocked_cidrs=tuple(self.egress_blocked_cidrs),
            resource_quota=self.resource_quota,
            limit_range=self.limit_range,
            manifest_kinds=tuple(self.manifest_kinds),
            workspace_volume=self.workspace_volume_name,
            conda_builder=self.conda_builder,
            conda_specs_path=self.conda_specs_path,
            condarc_path=self.condarc_path,
            container_security_context=dict(self.container_security_context or {})
            if self.secure_pod_defaults
            else {},
            init_container_resources=self._server_resources(),
        )

    def _server_resources(self) -> dict:
        """CPU and memory requests/limits of the server container, as KubeSpawner sets them."""
        requests, limits = {}, {}
        for target, cpu, mem in (
            (requests, self.cpu_guarantee, self.mem_guarantee),
            (limits, self.cpu_limit, self.mem_limit),
        ):
            if cpu:
                target["cpu"] = f"{cpu:g}"
            if mem:
                target["memory"] = str(int(mem))
        return {"requests": requests, "limits": limits}

    # -- spawn: the workspace -------------------------------------------------------------

    def kube(self) -> Kube:
        """The retried generic client, kept while KubeSpawner's API client and timeouts are."""
        key = (self.api.api_client, self.k8s_api_request_timeout, self.k8s_api_request_retry_timeout)
        if self._kube is None or self._kube_key != key:
            self._kube_key = key
            skip_env_lookups(key[0])
            self._kube = Kube(key[0], self.log, request_timeout=key[1], retry_timeout=key[2])
        return self._kube

    def report(self, message: str, progress: int | None = None) -> None:
        """Show ``message`` on the spawn page (and in the hub log)."""
        self.log.info("%s: %s", self._log_name, message)
        event: dict[str, Any] = {"message": message}
        if progress is not None:
            event["progress"] = progress
        self._progress_events.append(event)
        self._progress_changed.set()

    def start(self):
        self._progress_events = []
        self._provisioned = False
        return super().start()

    async def _start(self):
        url = await super()._start()
        if self.server_ready_poll > 0:
            self.report("Waiting for your server to start listening")
            listening = await readiness.until_listening(
                url, interval=self.server_ready_poll, timeout=self.http_timeout
            )
            if not listening:
                self.log.warning("%s: not listening at %s after %s s", self._log_name, url, self.http_timeout)
        return url

    async def _ensure_namespace(self):
        """KubeSpawner's namespace step, extended to the whole workspace.

        Returns once the pod may be created: after the workspace is written, or at once
        when the workspace is written together with the pod (``_workspace_round``).
        """
        try:
            await self.provision_workspace()
        except Exception as exc:
            raise self._workspace_failure(exc) from None
        finally:
            if self._workspace_round is None:
                self._provisioned = True

    def _workspace_failure(self, exc: BaseException) -> BaseException:
        """The hub's answer to a failed workspace: 403 for a refused namespace, 500 for a
        Kubernetes error (shown on the spawn page), anything else as it is."""
        if isinstance(exc, NamespaceRefused):
            self._namespace_refused = self.namespace
            self.log.error("%s", exc)
            self.report(exc.user_message)
            return web.HTTPError(403, exc.user_message)
        if isinstance(exc, KubeError | ApiException):
            reason = describe(exc) if isinstance(exc, ApiException) else str(exc)
            message = f"Could not prepare your workspace in namespace {self.namespace}: {reason}"
            self.report(message)
            return web.HTTPError(500, message)
        return exc

    async def provision_workspace(self) -> None:
        """Namespace, then every other object concurrently (the pod follows in ``_start``).

        Cold spawn: the namespace is read first and used only if it is this user's (see
        ``ownership``), or created. Once its ownership is known (spawner state), a warm
        spawn re-applies it together with everything else: no extra round trip; a 404
        falls back to the cold path.
        """
        kube = self.kube()
        conda_cache.start_jobs(kube, self._conda_jobs, self.log)  # shared Conda builds, not awaited
        self.report(f"Preparing your workspace (namespace {self.namespace})", 5)
        self._refuse_reserved(self.namespace)
        await self._refuse_cluster_scoped(kube)
        if self._pod_may_go_with_workspace():
            self._workspace_round = self._write_in_background(kube)
            return
        try:
            await self._provision(kube)
        except NamespaceTerminating:
            await self._await_namespace_deletion(kube)
            self._namespace_verified = None  # re-created: the cold path checks it again
            try:
                await self._provision(kube)
            except NamespaceTerminating:
                raise KubeError(self._still_deleting_message()) from None

    # -- spawn: the pod in the same round as the workspace -------------------------------

    def _pod_prerequisites(self) -> str | None:
        """A hash of what must exist before the pod (None: the pod must always wait).

        The namespace (Pod Security admission reads its labels), the objects of
        ``POD_PREREQUISITE_KINDS`` and the names of the pull secrets. Scratch claims are made
        anew at every spawn (the old one may still be being deleted) and so are a server's
        own Secrets (stops sweep them): a pull secret or a prerequisite among those makes
        the pod wait.
        """
        plan = self.plan
        if plan is None or plan.scratch_claims:
            return None
        needed = [plan.namespace]
        for obj in plan.objects:
            kind, name = obj["kind"], obj["metadata"]["name"]
            if kind in POD_PREREQUISITE_KINDS or (kind == "Secret" and name in plan.image_pull_secrets):
                if obj["metadata"]["labels"].get(L.PERSIST) != "true":
                    return None
                needed.append(obj)
        return content_hash([needed, sorted(plan.image_pull_secrets), sorted(plan.copy_secrets)])

    def _pod_may_go_with_workspace(self) -> bool:
        """True when this spawn's pod can be created while the workspace is written."""
        if not self.pod_with_workspace or self._namespace_verified != self.namespace:
            return False
        wanted = self._pod_prerequisites()
        return wanted is not None and wanted == self._prerequisites_written

    def _write_in_background(self, kube: Kube) -> asyncio.Future:
        """Start writing the workspace (namespace included) without waiting for it; the pod
        follows at once (``_make_create_pod_request`` collects the outcome)."""

        async def write():
            try:
                await self._write_workspace(kube, {}, with_namespace=True)
            finally:
                self._provisioned = True
                self._progress_changed.set()

        task = asyncio.ensure_future(write())

        def unclaimed(done: asyncio.Future) -> None:
            # the start failed before its pod (get_pod_manifest, a hook): nobody awaits this
            if self._workspace_round is done:
                self._workspace_round = None
                if not done.cancelled() and done.exception() is not None:
                    self.log.warning(
                        "%s: writing the workspace failed too: %s", self._log_name, done.exception()
                    )

        task.add_done_callback(unclaimed)
        return task

    async def _create_pod_with_workspace(self, workspace: asyncio.Future, pod, request_timeout) -> bool:
        """Send the pod while the workspace is written; settle both.

        A workspace that fails takes the pod made with it down (the spawn fails as it
        would have before the pod). A namespace gone or being deleted falls back to the
        full path (namespace, then the rest), and the pod follows on the next try, as it
        does when only the pod failed.
        """
        created, written = await asyncio.gather(
            self._send_pod(pod, request_timeout), workspace, return_exceptions=True
        )
        for result in (created, written):
            if isinstance(result, asyncio.CancelledError):
                raise result
        if isinstance(written, BaseException):
            if not isinstance(created, BaseException):
                await self._delete_pod_made_with(pod)
            gone = isinstance(written, ApiException) and written.status == 404
            if not (gone or isinstance(written, NamespaceTerminating)):
                raise self._workspace_failure(written)
            self.log.warning(
                "namespace %s is %s; writing the workspace again before the pod",
                self.namespace,
                "gone" if gone else "being deleted",
            )
            self._namespace_verified = self._prerequisites_written = None
            self._provisioned = False
            await self._ensure_namespace()
            return False
        if isinstance(created, BaseException):
            self.log.info(
                "pod %s sent with its workspace was not created (%s); sending it again",
                pod.metadata.name,
                describe(created),
            )
            return False
        return True

    async def _delete_pod_made_with(self, pod) -> None:
        try:
            await self.kube().delete("v1", "Pod", pod.metadata.name, self.namespace)
        except Exception as exc:  # the hub's stop after the failed start deletes it again
            self.log.warning("could not delete pod %s: %s", pod.metadata.name, describe(exc))

    async def _send_pod(self, pod, request_timeout) -> None:
        await self.kube().send_once(
            "POST", f"/api/v1/namespaces/{self.namespace}/pods", body=pod, seconds=request_timeout
        )

    def _still_deleting_message(self) -> str:
        return (
            f"your previous workspace (namespace {self.namespace}) is still being deleted by"
            " Kubernetes; please try again in a minute or two"
        )

    async def _await_namespace_deletion(self, kube: Kube) -> None:
        """Poll (bounded by ``namespace_deletion_wait``) until the namespace is gone."""
        self.report(
            f"Your previous workspace is still being deleted (namespace {self.namespace});"
            " waiting for Kubernetes to finish before creating it again",
            10,
        )
        if not await self._wait_while_terminating(kube, "Namespace", self.namespace):
            self.log.warning(
                "%s: namespace %s still Terminating after %g s",
                self._log_name,
                self.namespace,
                self.namespace_deletion_wait,
            )
            raise KubeError(self._still_deleting_message())
        self.report(f"Previous workspace deleted; creating namespace {self.namespace} again", 12)

    async def _provision(self, kube: Kube) -> None:
        """One attempt; ``NamespaceTerminating`` when the namespace is still being deleted."""
        if self._namespace_verified == self.namespace:
            try:
                await self._write_workspace(kube, {}, with_namespace=True)
                return
            except ApiException as exc:
                if exc.status != 404:
                    raise
                self.log.warning("namespace %s is gone; creating it again", self.namespace)
                self._namespace_verified = None
        copied = list(self.plan.copy_secrets)
        sources = asyncio.gather(*(kube.read("v1", "Secret", name, self.hub_namespace) for name in copied))
        try:
            existed = await self._claim_namespace(kube)
        except BaseException:
            sources.cancel()
            raise
        await self._write_workspace(
            kube, dict(zip(copied, await sources, strict=True)), with_namespace=existed
        )

    async def _refuse_cluster_scoped(self, kube: Kube) -> None:
        """Every object goes into the user's namespace: a kind the cluster serves cluster-wide
        (a CRD with ``scope: Cluster``) is refused before anything is written. Discovery
        answers are kept in ``kube``, so the writes that follow do not ask again."""
        for obj in self.plan.objects:
            rtype = await kube.resource_type(obj["apiVersion"], obj["kind"])
            if not rtype.namespaced:
                slug = self._profile_slug or "default"
                self.log.error(
                    "profile %s: %s %s (%s) is cluster-scoped in this cluster; refused",
                    slug,
                    obj["kind"],
                    obj["metadata"]["name"],
                    obj["apiVersion"],
                )
                raise web.HTTPError(
                    500,
                    f"Profile {slug!r} cannot be started: its manifest {obj['kind']}"
                    f" {obj['metadata']['name']!r} ({obj['apiVersion']}) is cluster-scoped, so"
                    " it would be shared with every other user; profile manifests must be"
                    " namespaced objects.",
                )

    def _refuse_reserved(self, namespace: str) -> None:
        reason = reserved_reason(namespace, self.hub_namespace, self.protected_namespaces)
        if reason:
            raise refusal(namespace, self.user.name, reason)

    async def _claim_namespace(self, kube: Kube) -> bool:
        """Verify that the namespace is this user's, or create it; True when it existed.

        Migration from the former 8-hex names: without a namespace in the spawner state,
        when the new name does not exist but the legacy one does and names this very user,
        the legacy namespace is kept (data, claims and all).
        """
        legacy = (
            None
            if self._namespace_from_state
            else legacy_user_namespace(self.user.name, self.namespace_prefix)
        )
        if legacy in (None, self.namespace) or reserved_reason(
            legacy, self.hub_namespace, self.protected_namespaces
        ):
            legacy = None
            # No migration to consider: create first. A create that succeeds made the
            # namespace ours (one round trip for a new user); one that exists (409) is read
            # and checked below, exactly as before.
            if await kube.create_if_absent(self.plan.namespace):
                self._namespace_verified = self.namespace
                return False
        found = await kube.read("v1", "Namespace", self.namespace)
        if found is None and legacy:
            old = await kube.read("v1", "Namespace", legacy)
            if old is not None and owner_problem(old, self.user.name) is None:
                self.log.warning(
                    "%s: keeping namespace %s made by the former naming scheme (new name %s)",
                    self._log_name,
                    legacy,
                    self.namespace,
                )
                self._use_namespace(legacy)
                found = old
        if found is not None:
            problem = owner_problem(found, self.user.name)
            if problem:
                raise refusal(self.namespace, self.user.name, problem)
            if terminating(found):
                raise NamespaceTerminating(self.namespace)
            self._namespace_verified = self.namespace
            return True
        await kube.apply(self.plan.namespace)
        self._namespace_verified = self.namespace
        return False

    def _use_namespace(self, namespace: str) -> None:
        """Switch to ``namespace`` (a kept legacy one) and plan the workspace there again."""
        self.namespace = namespace
        self.dns_name = self.dns_name_template.format(namespace=namespace, name=self.pod_name)
        if self.profile is not None:
            self.apply_profile(self.profile)

    async def _namespace_is_mine(self, kube: Kube) -> bool:
        """True unless the namespace was refused or is not this user's (checked once).

        Guards every write outside a spawn (token refresh, stop, delete): a namespace
        from an old spawner state may predate the ownership checks.
        """
        ns = self.namespace
        if self._namespace_refused == ns or reserved_reason(
            ns, self.hub_namespace, self.protected_namespaces
        ):
            self.log.warning("%s: not touching namespace %s (not this user's)", self._log_name, ns)
            return False
        if self._namespace_verified == ns:
            return True
        found = await kube.read("v1", "Namespace", ns)
        problem = owner_problem(found, self.user.name) if found is not None else None
        if problem:
            self._namespace_refused = ns
            self.log.error("%s", refusal(ns, self.user.name, problem))
            return False
        if found is not None:
            self._namespace_verified = ns
        return True

    async def _write_workspace(self, kube: Kube, sources: dict, with_namespace: bool = False) -> None:
        plan = self.plan
        limit = asyncio.Semaphore(self.provision_concurrency)

        async def apply(obj):
            async with limit:
                written = await kube.apply(obj)
            if obj is plan.namespace and terminating(written):
                raise NamespaceTerminating(self.namespace)

        async def claim(obj):
            async with limit:
                created = await kube.create_if_absent(obj)
            if not created and obj["metadata"]["labels"].get(L.SCRATCH) == "true":
                created = await self._renew_scratch(kube, obj)
            self.report(f"Storage {obj['metadata']['name']} {'created' if created else 'kept'}")

        async def copy(name):
            source = sources.get(name) or await kube.read("v1", "Secret", name, self.hub_namespace)
            if source is None:
                raise KubeError(
                    f"image pull secret {name} not found in the hub namespace"
                    f" {self.hub_namespace}; create it there first"
                )
            await apply(self._copied_secret(source))

        self.report(
            f"Writing {len(plan.objects) + len(plan.copy_secrets)} configuration objects"
            f" and {len(plan.claims)} volume claims",
            15,
        )
        tasks = ([apply(plan.namespace)] if with_namespace else []) + [apply(o) for o in plan.objects]
        tasks += [copy(n) for n in plan.copy_secrets] + [claim(c) for c in plan.claims]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if any(isinstance(e, NamespaceTerminating) or is_namespace_terminating(e) for e in errors):
            raise NamespaceTerminating(self.namespace)
        if errors:
            raise next((e for e in errors if isinstance(e, ApiException) and e.status == 404), errors[0])
        self._prerequisites_written = self._pod_prerequisites()
        kinds = sorted(
            {o["kind"] for o in plan.objects + plan.claims} | ({"Secret"} if plan.copy_secrets else set())
        )
        self.report(f"Workspace ready ({', '.join(kinds)}); starting your server", 35)

    async def _renew_scratch(self, kube: Kube, obj: dict) -> bool:
        """A scratch claim that exists: the last stop's, still being deleted (its pods are
        finishing), is waited for and made anew; a pod would not start on it. True when made."""
        name = obj["metadata"]["name"]
        if not terminating(await kube.read("v1", "PersistentVolumeClaim", name, self.namespace)):
            return False  # a live claim (the last stop could not delete it): used as it is
        self.report(
            f"Scratch storage {name} of your previous session is still being deleted;"
            " waiting for Kubernetes to finish"
        )
        if not await self._wait_while_terminating(kube, "PersistentVolumeClaim", name, self.namespace):
            self.log.warning(
                "%s: scratch claim %s/%s still being deleted after %g s",
                self._log_name,
                self.namespace,
                name,
                self.namespace_deletion_wait,
            )
            raise KubeError(
                f"the scratch storage {name} of your previous session is still"
                " being deleted by Kubernetes; please try again in a minute or two"
            )
        return await kube.create_if_absent(obj)

    async def _wait_while_terminating(
        self, kube: Kube, kind: str, name: str, namespace: str | None = None
    ) -> bool:
        """Poll while the object is being deleted, backing off from 0.2 s to 2 s, for at most
        ``namespace_deletion_wait``; False when it is still being deleted then."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.namespace_deletion_wait
        delay = 0.2
        while terminating(await kube.read("v1", kind, name, namespace)):
            if loop.time() + delay > deadline:
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
        return True

    def _copied_secret(self, source: dict) -> dict:
        meta = {
            "name": source["metadata"]["name"],
            "namespace": self.namespace,
            "labels": L.ownership(self.user_slug, None, None, True),
            "annotations": {
                L.USERNAME_ANNOTATION: self.user.name,
                "apex.esa.int/copied-from": f"{self.hub_namespace}/{source['metadata']['name']}",
            },
        }
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": meta,
            "type": source.get("type", "Opaque"),
        }
        if source.get("data"):
            secret["data"] = source["data"]
        return secret

    async def get_pod_manifest(self):
        await lean.take_turn()
        pod = await super().get_pod_manifest()
        plan = self.plan
        if plan is None:
            return pod
        pod.spec.volumes = list(pod.spec.volumes or []) + plan.volumes
        container = pod.spec.containers[0]
        ours = {e["name"] for e in plan.env}
        env = [e for e in (container.env or []) if getattr(e, "name", None) not in ours]
        container.env = env + plan.env
        container.env_from = list(container.env_from or []) + plan.env_from or None
        container.volume_mounts = list(container.volume_mounts or []) + plan.volume_mounts
        pod.spec.init_containers = plan.init_containers + list(pod.spec.init_containers or []) or None
        pod.metadata.annotations = {**(pod.metadata.annotations or {}), L.USERNAME_ANNOTATION: self.user.name}
        group = self._auth_state.get("primary_group") or next(iter(self.group_names()), None)
        if group:
            pod.metadata.annotations[L.GROUP_ANNOTATION] = group
        self._check_pod(pod)
        return pod

    def _check_pod(self, pod) -> None:
        """Refuse a pod that weakens isolation, whichever setting put it there (``podgate``)."""
        if not self.secure_pod_defaults or self._allow_security:
            return
        serialized = self.api.api_client.sanitize_for_serialization(pod)
        problems = pod_problems(conda_cache.gate_view(serialized, self.conda_cache_volume))
        if problems:
            slug = self._profile_slug or "default"
            self.log.error(
                "refusing the pod of %s (profile %s): %s. Remove the setting (for the"
                " Z2JH chart's block-cloud-metadata init container:"
                " singleuser.cloudMetadata.blockWithIptables: false; the NetworkPolicy"
                " blocks the endpoint), or set allow_security_overrides: true in the"
                " catalogue",
                self._log_name,
                slug,
                "; ".join(problems),
            )
            raise web.HTTPError(
                500,
                f"Profile {slug!r} cannot be started: its pod would weaken"
                f" workspace isolation ({'; '.join(problems)}). The"
                " administrators have been told.",
            )

    async def _make_create_pod_request(self, pod, request_timeout):
        """One try at creating the pod, for KubeSpawner's ``exponential_backoff``: True when
        created, False to be called again.

        KubeSpawner's own, with these differences: the answer is not turned into a
        ``V1Pod`` (milliseconds of the hub's loop per spawn, for nothing: the reflector has
        the pod); transient failures (a 5xx, a connection reset by a load balancer or an
        API server restart) are tried again instead of failing the spawn; and the first try
        of a warm spawn goes out while the workspace is being written (``_workspace_round``).
        """
        workspace, self._workspace_round = self._workspace_round, None
        if workspace is not None:
            return await self._create_pod_with_workspace(workspace, pod, request_timeout)
        name = pod.metadata.name
        self.log.info("creating pod %s/%s", self.namespace, name)
        try:
            await self._send_pod(pod, request_timeout)
            return True
        except TimeoutError:
            return False
        except ApiException as exc:
            if exc.status == 409:
                # a pod of an earlier start: stopped, then this start tries again. That stop
                # must keep the workspace.
                self.log.info("pod %s/%s exists already; deleting it first", self.namespace, name)
                token = _REPLACING_POD.set(True)
                try:
                    await self.stop(True)
                finally:
                    _REPLACING_POD.reset(token)
                return False
            if is_transient(exc):
                self.log.warning("creating pod %s failed (%s); retrying", name, describe(exc))
                return False
            self.log.error("creating pod %s/%s failed: %s", self.namespace, name, describe(exc))
            raise
        except Exception as exc:
            if is_transient(exc):
                self.log.warning("creating pod %s failed (%s); retrying", name, describe(exc))
                return False
            raise

    async def _make_delete_pod_request(self, pod_name, delete_options, grace_seconds, request_timeout):
        """KubeSpawner's, without a ``V1Pod`` built from the answer, and retrying transient
        failures: True when the pod is deleted (or was gone), False to be called again."""
        self.log.info("deleting pod %s/%s", self.namespace, pod_name)
        try:
            await self.kube().send_once(
                "DELETE",
                f"/api/v1/namespaces/{self.namespace}/pods/{pod_name}",
                body=delete_options,
                query=[("gracePeriodSeconds", grace_seconds)],
                seconds=request_timeout,
            )
            return True
        except TimeoutError:
            return False
        except ApiException as exc:
            if exc.status == 404:
                self.log.warning("no pod %s/%s to delete; assuming it is gone", self.namespace, pod_name)
                return True
            if is_transient(exc):
                self.log.warning("deleting pod %s failed (%s); retrying", pod_name, describe(exc))
                return False
            raise
        except Exception as exc:
            if is_transient(exc):
                self.log.warning("deleting pod %s failed (%s); retrying", pod_name, describe(exc))
                return False
            raise

    async def poll(self):
        """KubeSpawner's poll, but a server recorded in a namespace that is not this user's
        (a state from before the ownership checks) is reported stopped, so the hub forgets
        its route instead of sending the user to a pod in someone else's namespace."""
        if self._namespace_verified != self.namespace and not await self._namespace_is_mine(self.kube()):
            return 1
        return await super().poll()

    @property
    def events(self):
        """KubeSpawner's list: this pod's events since ``_last_event``, oldest first.

        The same list, computed from this pod's events only: KubeSpawner sorts every event
        the reflector holds (every namespace's, for an hour) on each call, and the spawn page
        asks once a second per spawn, so that sort grew with the hub's activity into
        milliseconds of the event loop per call. Picking the pod's events first and then
        sorting them (a stable sort: the order is the one the full sort gives them) is
        linear in the events held and sorts only a handful.
        """
        reflector = self.event_reflector
        if not reflector:
            return []
        name = self.pod_name
        mine = sorted(
            [e for e in list(reflector.resources.values()) if e["involvedObject"]["name"] == name],
            key=lambda event: event["lastTimestamp"] or event["eventTime"],
        )
        if self._last_event:
            for i in range(len(mine) - 1, -1, -1):
                if mine[i]["metadata"]["uid"] == self._last_event:
                    return mine[i + 1 :]  # only the events after the marker
        return mine

    async def progress(self):
        """Workspace steps first, then KubeSpawner's pod events (scaled to follow them)."""
        sent = 0
        while True:
            future = getattr(self, "_start_future", None)
            done = self._provisioned or (future is not None and future.done())
            self._progress_changed.clear()  # before draining: no report is missed
            while sent < len(self._progress_events):
                yield self._progress_events[sent]
                sent += 1
            if done:  # read before draining, so the last reports were yielded above
                break
            try:
                await asyncio.wait_for(self._progress_changed.wait(), 1)
            except TimeoutError:
                pass
        async for event in super().progress():
            if "progress" in event:
                event = {**event, "progress": 40 + int(event["progress"] * 0.55)}
            yield event

    # -- stop and delete ------------------------------------------------------------------

    async def stop(self, now=False):
        """Stop the pod, then delete this server's non-persistent objects by label.

        The only claims deleted here are this server's scratch claims (``volumes[].scratch``,
        labelled so): the user's other data outlives every stop. Nothing is deleted in a
        namespace that is not this user's (a refused spawn, an old state).
        """
        if not await self._namespace_is_mine(self.kube()):
            return
        await lean.take_turn()  # many stops at once: their requests go out in turns
        await super().stop(now)
        if not _REPLACING_POD.get():
            workspace = self._workspace_round
            if workspace is not None:  # a start that failed before its pod: let the writes land
                await asyncio.wait([workspace])
            await self.sweep(persist=False)

    async def sweep(self, persist: bool | None) -> None:
        """Delete this server's objects (``persist=None``: all of them) of every known kind."""
        kinds = set(SWEPT_KINDS) | set(self._server_kinds)
        if persist is None:
            kinds.add("v1/PersistentVolumeClaim")
        else:  # a stop deletes no claim, whatever made it (volumes or manifests), but scratch
            kinds.discard("v1/PersistentVolumeClaim")
        kinds = sorted(kinds)
        selectors = [L.server_selector(self.user_slug, self.server_name, persist)]
        legacy = L.server_selector(legacy_slugify(self.user.name), self.server_name, persist, legacy=True)
        if legacy != selectors[0]:  # objects labelled before the 130-bit names
            selectors.append(legacy)
        kube = self.kube()
        if not await self._namespace_is_mine(kube):
            return
        await lean.take_turn()
        jobs = [(k, s) for s in selectors for k in kinds]
        if persist is False and self._scratch_claims:  # this server's scratch claims, by label
            jobs.append(("v1/PersistentVolumeClaim", L.scratch_selector(self.user_slug, self.server_name)))
        results = await asyncio.gather(
            *(kube.delete_collection(*_split_kind(k), self.namespace, s) for k, s in jobs),
            return_exceptions=True,
        )
        for (kind, _), result in zip(jobs, results, strict=True):
            if isinstance(result, BaseException):
                self.log.error(
                    "could not delete %s of %s in %s (%s); the next stop retries",
                    kind,
                    self._log_name,
                    self.namespace,
                    result,
                )

    async def delete_forever(self):
        """The user (or a named server) is deleted: remove what belonged to the server.

        The namespace, and with it every claim, goes only with
        ``delete_namespace_on_user_delete`` and only with the user's default server.
        """
        if not self.server_name and self.delete_namespace_on_user_delete:
            kube = self.kube()
            if not await self._namespace_is_mine(kube):
                return
            self.log.info("deleting namespace %s of deleted user %s", self.namespace, self.user.name)
            await kube.delete("v1", "Namespace", self.namespace)
            return
        await self.sweep(persist=None)

    # -- state ----------------------------------------------------------------------------

    def get_state(self):
        state = super().get_state()
        if self._server_kinds:
            state["apex_server_kinds"] = self._server_kinds
        if self._scratch_claims:
            state["apex_scratch_claims"] = True
        if self._profile_slug:
            state["apex_profile"] = self._profile_slug
        if self._namespace_verified and self._namespace_verified == self.namespace:
            state["apex_namespace_verified"] = self._namespace_verified
            if self._prerequisites_written:
                state["apex_pod_prerequisites"] = self._prerequisites_written
        return state

    def load_state(self, state):
        super().load_state(state)
        self._namespace_from_state = "namespace" in state
        self._server_kinds = list(state.get("apex_server_kinds", []))
        self._scratch_claims = bool(state.get("apex_scratch_claims"))
        self._namespace_verified = state.get("apex_namespace_verified")
        self._prerequisites_written = state.get("apex_pod_prerequisites")
        # the token Secret republished after a hub restart keeps its profile label
        self._profile_slug = state.get("apex_profile") or self._profile_slug
