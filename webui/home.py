"""What the home page shows: the gateways seen and their health (their heartbeats, gateway_admin.GatewayHeartbeat),
the recent errors (usage rollups with a status of 400 or more) and the first-run checklist."""

from datetime import timedelta

from django.db.models import Max, Sum
from django.urls import reverse
from django.utils import timezone

from apis.models import API
from gateway_admin.models import ConfigRevision, GatewayHeartbeat
from subscriptions.models import Subscription
from usage.models import UsageRollup

__all__ = ("ERRORS_WINDOW", "home_overview")

ERRORS_WINDOW = timedelta(hours=24)
MAX_GATEWAYS = 50
MAX_ERRORS = 10
MASTER = "master"  # the built-in all-access subscription (subscriptions migration 0002)


def home_overview(user) -> dict:
    now = timezone.now()
    steps = checklist(user)
    context: dict = {"checklist": steps, "first_run": not all(step["done"] for step in steps)}
    context["revision"] = ConfigRevision.current()
    gateways = list(GatewayHeartbeat.objects.all()[:MAX_GATEWAYS])
    for gateway in gateways:
        gateway.stale = gateway.is_stale(now)
    context["gateways"] = gateways
    if user.has_perm("usage.view_usagerollup"):
        context["errors"] = list(
            UsageRollup.objects.filter(minute__gte=now - ERRORS_WINDOW, status__gte=400)
            .values("api", "operation", "status")
            .annotate(requests=Sum("requests"), last=Max("minute"))
            .order_by("-last", "api", "operation", "status")[:MAX_ERRORS]
        )
    return context


def checklist(user) -> list[dict]:
    """The first steps, each done or not, with where to do it."""
    first_api = API.objects.order_by("name").values_list("name", flat=True).first()
    steps = [
        {
            "label": "Import a language model API",
            "done": first_api is not None,
            "url": reverse("webui:import") if user.has_perm("apis.add_api") else None,
        },
        {
            "label": "Create a subscription for a client (besides the built-in master)",
            "done": Subscription.objects.exclude(name=MASTER).exists(),
            "url": reverse("webui:object-create", kwargs={"kind": "subscriptions"})
            if user.has_perm("subscriptions.add_subscription")
            else None,
        },
        {
            "label": "Send a test request from the test console",
            "done": UsageRollup.objects.exists(),
            "url": reverse("webui:console", kwargs={"name": first_api}) if first_api else None,
        },
    ]
    return steps
