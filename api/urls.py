"""/api/v1/… resources, /api/schema/ (OpenAPI 3) and /api/docs/ (Swagger UI, served from the
installed static files)."""

from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.routers import SimpleRouter

from api import pages, problems, triggers, views

router = SimpleRouter()
router.register("entities", views.EntityViewSet, basename="entity")
router.register("contacts", views.ContactViewSet, basename="contact")
router.register("stores", views.StoreViewSet, basename="store")
router.register("bookings", views.BookingViewSet, basename="booking")
router.register("subscriptions", views.SubscriptionViewSet, basename="subscription")
router.register("packages", views.PackageViewSet, basename="package")
router.register("orders", views.OrderViewSet, basename="order")
router.register("approvals", views.ApprovalViewSet, basename="approval")
router.register("campaigns", views.CampaignViewSet, basename="campaign")
router.register("deliveries", views.DeliveryViewSet, basename="delivery")
router.register("tokens", views.TokenViewSet, basename="token")

app_name = "api"
urlpatterns = [
    path("v1/counts/", views.CountView.as_view(), name="counts"),
    path(
        "v1/triggers/messages/<int:message_id>/",
        triggers.TriggerStatusView.as_view(),
        name="trigger-status",
    ),
    path("v1/triggers/<str:key>/", triggers.TriggerView.as_view(), name="trigger"),
    path("v1/", include(router.urls)),
    path("tokens/", pages.tokens_page, name="tokens_page"),
    path("tokens/<int:pk>/revoke/", pages.revoke_page, name="revoke_page"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api:schema"), name="docs"),
    re_path(r"^.*$", problems.not_found),
]
