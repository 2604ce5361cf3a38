from django.urls import path

from campaigns import views
from campaigns.delivery import views as delivery_views
from campaigns.workflow import views as workflow_views

app_name = "campaigns"

urlpatterns = [
    path("campaigns/", views.campaign_list, name="list"),
    path("campaigns/<int:pk>/", views.campaign_detail, name="detail"),
    path("campaigns/<int:pk>/personalise/", views.campaign_personalise, name="personalise"),
    path("campaigns/<int:pk>/run/<str:action>/", views.campaign_action, name="action"),
    path("campaigns/<int:pk>/schedule/", views.campaign_schedule, name="schedule"),
    path("campaigns/<int:pk>/files/<str:name>/", views.campaign_file, name="file"),
    path(
        "campaigns/<int:pk>/steps/<int:activity_pk>/",
        workflow_views.activity_edit,
        name="activity_edit",
    ),
    path("campaigns/lists/<int:pk>/", workflow_views.review, name="local_approval"),
    path("campaigns/<int:pk>/canvas/", workflow_views.canvas_graph, name="canvas_graph"),
    path("campaigns/<int:pk>/canvas/save/", workflow_views.canvas_save, name="canvas_save"),
    path("campaigns/<int:pk>/canvas/step/", workflow_views.canvas_step, name="canvas_step"),
    path(
        "campaigns/<int:pk>/canvas/simulate/",
        workflow_views.canvas_simulate,
        name="canvas_simulate",
    ),
    path("deliveries/<int:pk>/", delivery_views.delivery_detail, name="delivery"),
    path(
        "deliveries/<int:pk>/<str:action>/",
        delivery_views.delivery_action,
        name="delivery_action",
    ),
    path(
        "reports/engagement/<str:level>/<int:pk>/",
        delivery_views.engagement_report,
        name="engagement",
    ),
    path("audience/contacts/<int:pk>/", delivery_views.contact_history, name="contact"),
    path("audience/", views.audience, name="audience"),
    path("audience/count/", views.audience_count, name="audience_count"),
    path("audience/imports/", views.import_create, name="import_create"),
    path("audience/imports/<int:pk>/", views.import_detail, name="import_detail"),
    path("audience/imports/<int:pk>/report/", views.import_report, name="import_report"),
    path(
        "audience/imports/templates/<slug:kind>.<slug:file_format>",
        views.import_template,
        name="import_template",
    ),
]
