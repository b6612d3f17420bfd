from django.contrib.auth import views as auth_views
from django.db import transaction
from django.urls import path

from . import console, usage, views
from .policy_editor import PolicyEditorView
from .wizard import ImportWizardView

app_name = "webui"

# Operations are addressed by their API and their name; every other kind by its name.
# The detail page comes last: its pattern would also match the others.
OBJECT_PAGES = (
    ("edit/", views.ObjectEditView, "object-edit"),
    ("delete/", views.ObjectDeleteView, "object-delete"),
    ("reveal/", views.RevealView, "object-reveal"),
    ("", views.ObjectDetailView, "object-detail"),
)

urlpatterns = [
    path("", views.IndexView.as_view(), name="index"),
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("import/", ImportWizardView.as_view(), name="import"),
    path("usage/", usage.UsageView.as_view(), name="usage"),
    path("policy/global/", PolicyEditorView.as_view(), {"scope": "global"}, name="policy-global"),
    path(
        "policy/operation/<str:api>/<str:name>/",
        PolicyEditorView.as_view(),
        {"scope": "operation"},
        name="policy-operation",
    ),
    path("policy/<slug:scope>/<str:name>/", PolicyEditorView.as_view(), name="policy"),
    path("apis/<str:name>/console/", console.ConsoleView.as_view(), name="console"),
    # The relay waits for the gateway (and so for the model) and writes nothing: outside ATOMIC_REQUESTS, it holds no
    # transaction, which on SQLite (transactions begin IMMEDIATE) would keep every writer waiting for the model.
    path(
        "apis/<str:name>/console/send/",
        transaction.non_atomic_requests(console.ConsoleSendView.as_view()),
        name="console-send",
    ),
    path("apis/<str:name>/console/key/", console.ConsoleKeyView.as_view(), name="console-key"),
    path("<slug:kind>/", views.ObjectListView.as_view(), name="object-list"),
    # "+" is in no object's name, so this page cannot hide an object's
    path("<slug:kind>/+new/", views.ObjectCreateView.as_view(), name="object-create"),
    path(
        "<slug:kind>/<str:name>/regenerate/<str:which>/",
        views.RegenerateKeyView.as_view(),
        name="object-regenerate",
    ),
    *(
        path(f"operations/<str:api>/<str:name>/{suffix}", view.as_view(), {"kind": "operations"}, name=name_)
        for suffix, view, name_ in OBJECT_PAGES
    ),
    *(path(f"<slug:kind>/<str:name>/{suffix}", view.as_view(), name=name_) for suffix, view, name_ in OBJECT_PAGES),
]
