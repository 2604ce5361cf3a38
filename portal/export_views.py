"""Portal pages of exports: start one, follow its progress, download the file (owner only)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from portal import exports
from portal.choices import ExportFormat, ExportState
from portal.exceptions import DomainError
from portal.models import ExportJob
from portal.web import file_response, page_number


def _own_job(request: HttpRequest, pk: int) -> ExportJob:
    """The user's own export, or 404 (another user's is not told apart from a missing one)."""
    return get_object_or_404(ExportJob.objects.visible_to(request.user), pk=pk)


@login_required
def export_list(request: HttpRequest) -> HttpResponse:
    jobs = ExportJob.objects.visible_to(request.user).filter(owner=request.user)
    page = Paginator(jobs, 50).get_page(page_number(request))
    return render(request, "portal/export_list.html", {"page": page})


@login_required
@require_POST
def export_create(request: HttpRequest) -> HttpResponse:
    """Export a portal list: a few rows come back at once (streamed); more become a job whose
    progress page offers the file when it is ready."""
    back = request.POST.get("next", "")
    back = back if back.startswith("/") and not back.startswith("//") else "/"
    try:
        kind = exports.get_kind(request.POST.get("kind", ""))
        exports.check_may_export(actor=request.user, kind=kind)
        file_format = request.POST.get("format", ExportFormat.CSV)
        if file_format not in ExportFormat.values:
            raise DomainError(f"The format must be one of {', '.join(ExportFormat.values)}.")
        filters = exports.clean_filters(kind, {"q": request.POST.get("q", "")})
        queryset = exports.rows_queryset(kind, request.user, filters)
        limit = exports.immediate_limit()
        if not queryset[limit:].exists():
            return exports.stream_response(
                kind=kind,
                queryset=queryset,
                columns=list(kind.columns),
                file_format=file_format,
                name=f"{kind.name}-{timezone.localdate():%Y-%m-%d}",
            )
        job = exports.create_export(
            actor=request.user, kind=kind.name, file_format=file_format, filters=filters
        )
    except DomainError as exc:
        for problem in exc.problems:
            messages.error(request, problem)
        return redirect(back)
    messages.success(request, "Your export is being prepared; this page shows its progress.")
    return redirect("portal:export_detail", job.pk)


@login_required
def export_detail(request: HttpRequest, pk: int) -> HttpResponse:
    job = _own_job(request, pk)
    return render(
        request,
        "portal/export_detail.html",
        {"job": job, "status": exports.status(job), "running": not exports.status(job)["finished"]},
    )


@login_required
def export_status(request: HttpRequest, pk: int) -> JsonResponse:
    """The small JSON the progress page polls."""
    job = _own_job(request, pk)
    response = JsonResponse(exports.status(job))
    response["Cache-Control"] = "no-store"
    return response


@login_required
def export_download(request: HttpRequest, pk: int) -> HttpResponse:
    job = _own_job(request, pk)
    if job.state != ExportState.DONE or not job.file:
        raise Http404("This export has no file (not ready yet, failed or expired).")
    return file_response(job.file.name, job.filename)
